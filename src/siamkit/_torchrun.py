"""Whether this process was started by ``torchrun``: read from its environment, without torch."""

from __future__ import annotations

import os


def launched_by_torchrun() -> bool:
    """True when this process was started by ``torchrun`` with more than one rank.

    Examples:
        >>> import os
        >>> expected = "RANK" in os.environ and os.environ.get("WORLD_SIZE", "1") != "1"
        >>> launched_by_torchrun() == expected
        True
    """
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ
