"""The face-search service: a REST app over face galleries, and its API keys.

``create_app`` needs the serve extra (``pip install "siamkit[serve]"``); the
keys do not.

Examples:
    >>> from siamkit.serve import ROLES
    >>> sorted(ROLES)
    ['admin', 'enrol', 'query']
"""

from typing import Any

from siamkit.serve.keys import ALL_GALLERIES, ROLES, ApiKey, KeyFile, NewKey, authenticate


def create_app(*args: Any, **kwargs: Any) -> Any:
    """The service's ASGI app: :func:`siamkit.serve.app.create_app` (needs the serve extra)."""
    try:
        from siamkit.serve.app import create_app as create
    except ModuleNotFoundError as err:
        from siamkit.exceptions import MissingExtraError

        raise MissingExtraError(
            f"the service needs {err.name}: pip install 'siamkit[serve]'"
        ) from None
    return create(*args, **kwargs)


__all__ = ["ALL_GALLERIES", "ROLES", "ApiKey", "KeyFile", "NewKey", "authenticate", "create_app"]
