"""Reading a FAISS index file that may be hostile, without crashing or hanging the process.

FAISS trusts its files: a size field in the body is allocated as it stands,
so a file whose checksum was made to match can ask for terabytes (an
uncaught ``std::bad_alloc``) or for gigabytes zero-filled one after another
(minutes of work). Two checks come before FAISS reads the body here:

1. the header (kind, dimension, vector count, metric) is read by hand and
   compared with the manifest;
2. FAISS first reads the file in a separate Python process whose address
   space is capped at a few times the file's size and whose time is capped
   too. Only when that read succeeds does this process read the same bytes.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from typing import IO, Any

import faiss

from siamkit.exceptions import IndexFileError
from siamkit.index.stores.faiss.engine import faiss_metric

#: FAISS's own name (fourcc) of the index each built-in kind writes.
BUILTIN_FOURCC = {"hnsw": b"IHNf", "ivf": b"IwFl"}
# fourcc, d (int32), ntotal (int64), two unused int64, is_trained (uint8), metric (int32).
_HEADER = struct.Struct("<4siqqqBi")
#: The probe may use this many times the file's size in memory, plus a fixed allowance.
PROBE_MEMORY_FACTOR = 4
PROBE_MEMORY_BASE = 512 << 20
#: The probe may take this long, plus a second per this many bytes.
PROBE_SECONDS = 30.0
PROBE_BYTES_PER_SECOND = 50 << 20

_PROBE = """
import os, sys
import faiss
size, factor, base = (int(arg) for arg in sys.argv[2:5])
if factor:
    import resource
    with open("/proc/self/status") as status:
        used = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (used + factor * size + base,) * 2)
handle = os.fdopen(int(sys.argv[1]), "rb", closefd=False)
handle.seek(0)
faiss.read_index(faiss.PyCallbackIOReader(handle.read))
"""


def read_faiss_index(handle: IO[bytes], size: int, expected: dict[str, Any]) -> Any:
    """Check and read the FAISS index in the open file ``handle`` (``size`` bytes).

    Args:
        handle: The file, open for binary reading; read from its start.
        size: Its size in bytes.
        expected: ``kind`` (the index spec's kind), ``dim``, ``rows`` and ``metric``.

    Raises:
        IndexFileError: the header disagrees with ``expected``, or FAISS
            cannot read the file within the probe's memory and time.

    Examples:
        >>> import io, numpy as np
        >>> index = faiss.IndexHNSWFlat(4, 8)
        >>> index.add(np.eye(4, dtype="float32"))
        >>> data = faiss.serialize_index(index).tobytes()
        >>> check_header(data[:_HEADER.size], {"kind": "hnsw", "dim": 4, "rows": 4,
        ...                                    "metric": "euclidean"})
    """
    handle.seek(0)
    check_header(handle.read(_HEADER.size), expected)
    _probe(handle, size)
    # The probe moved the shared file offset: a seek to the end drops the
    # buffer, which a plain seek(0) inside it would keep.
    handle.seek(0, os.SEEK_END)
    handle.seek(0)
    try:
        return faiss.read_index(faiss.PyCallbackIOReader(handle.read))
    except (RuntimeError, MemoryError) as err:
        raise IndexFileError(f"FAISS cannot read the index file: {_first_line(err)}") from None


def check_header(header: bytes, expected: dict[str, Any]) -> None:
    """Compare a FAISS file's header with what the manifest says it holds.

    Raises:
        IndexFileError: a short file, another index kind, dimension, count or metric.
    """
    if len(header) < _HEADER.size:
        raise IndexFileError("the FAISS index file is too short to hold a FAISS index")
    fourcc, dim, ntotal, _, _, _, metric = _HEADER.unpack(header)
    want = BUILTIN_FOURCC.get(expected["kind"])
    problems = []
    if want is not None and fourcc != want:
        problems.append(f"kind {fourcc!r}, expected {want!r} for {expected['kind']!r}")
    if not (fourcc.isascii() and fourcc.isalnum()):
        problems.append(f"no FAISS index kind ({fourcc!r})")
    if dim != expected["dim"]:
        problems.append(f"dimension {dim}, expected {expected['dim']}")
    if ntotal != expected["rows"]:
        problems.append(f"{ntotal} vectors, expected {expected['rows']}")
    if metric != faiss_metric(expected["metric"]):
        problems.append(f"FAISS metric {metric}, expected the {expected['metric']} one")
    if problems:
        raise IndexFileError(
            f"the FAISS index file disagrees with the manifest: {'; '.join(problems)}"
        )


def _probe(handle: IO[bytes], size: int) -> None:
    # Where there is no /proc and no RLIMIT_AS, only the time is bounded.
    linux = sys.platform.startswith("linux")
    memory = (PROBE_MEMORY_FACTOR, PROBE_MEMORY_BASE) if linux else (0, 0)
    fd = handle.fileno()
    timeout = PROBE_SECONDS + size / PROBE_BYTES_PER_SECOND
    try:
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, str(fd), str(size), *map(str, memory)],
            pass_fds=(fd,),
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise IndexFileError(
            f"reading the FAISS index file took more than {timeout:.0f} s: it is damaged or hostile"
        ) from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["it stopped"])[-1]
        raise IndexFileError(
            f"FAISS cannot read the index file within {PROBE_MEMORY_FACTOR}x its size in "
            f"memory ({last.strip()[:200]}): it is damaged or hostile"
        )


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
