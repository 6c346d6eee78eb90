"""The face-search service: API keys with roles and gallery scopes (the REST app is to come).

Examples:
    >>> from siamkit.serve import ROLES
    >>> sorted(ROLES)
    ['admin', 'enrol', 'query']
"""

from siamkit.serve.keys import ALL_GALLERIES, ROLES, ApiKey, KeyFile, NewKey, authenticate

__all__ = ["ALL_GALLERIES", "ROLES", "ApiKey", "KeyFile", "NewKey", "authenticate"]
