"""The AT&T (ORL) face database, with a safe downloader.

40 people × 10 greyscale 92×112 images, taken between 1992 and 1994 at the
Olivetti Research Laboratory in Cambridge, UK. Credit: Olivetti Research
Laboratory (F. Samaria and A. Harter, "Parameterisation of a stochastic model
for human face identification", 2nd IEEE Workshop on Applications of Computer
Vision, 1994).

The downloader trusts neither the server nor the archive. The real archive is
about 3.7 MB zipped and 4.2 MB extracted (400 PGM files that barely compress);
anything far from that is refused with ``DownloadError`` before it fills the
disk: a download over :data:`MAX_ARCHIVE_BYTES`, more than :data:`MAX_MEMBERS`
members, more than :data:`MAX_EXTRACTED_BYTES` extracted (counted both from the
zip directory and in the bytes actually written, as the directory can lie), a
member over 1 MiB that compresses better than :data:`MAX_COMPRESSION_RATIO`,
members that climb out of the target folder, links, and members that collide
(a file ``s1`` next to a folder ``s1/``). Nothing is written outside ``root``.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import stat
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from siamkit._atomic import current_umask, honour_umask
from siamkit.data.folder import FaceFolder
from siamkit.exceptions import DataError, DownloadError

ATT_URL = "https://www.cl.cam.ac.uk/research/dtg/attarchive/pub/data/att_faces.zip"
ARCHIVE_NAME = "att_faces.zip"
FOLDER_NAME = "att_faces"
NUM_PEOPLE = 40
IMAGES_PER_PERSON = 10
_MEMBER = re.compile(r"(?:^|/)s(\d+)/(\d+)\.pgm$")

#: Largest archive downloaded or opened: about 8x the real one (3.7 MB).
MAX_ARCHIVE_BYTES = 32 * 2**20
#: Largest total extracted size: about 16x the real faces (4.2 MB).
MAX_EXTRACTED_BYTES = 64 * 2**20
#: Most members an archive may list (the real one has about 450).
MAX_MEMBERS = 10_000
#: Best compression a member over 1 MiB may show (faces compress about 1.1:1; a
#: "zip bomb" of zeros about 1000:1).
MAX_COMPRESSION_RATIO = 100
_RATIO_CHECKED_ABOVE = 2**20
_CHUNK = 1 << 16


class ATTFaces(FaceFolder):
    """The AT&T/ORL faces as an :class:`~siamkit.data.FaceFolder` (classes ``s1``..``s40``).

    ``root`` may be the folder holding ``s1``..``s40`` itself, or a folder in
    which ``att_faces/`` lives or is to be downloaded. With ``download=True``
    the archive is fetched (from ``url``, the ``SIAMKIT_ATT_URL`` environment
    variable, or the official address), its structure checked (40 people × 10
    images) and extracted safely; work already done is skipped.

    Args:
        root: See above.
        download: Fetch the faces if they are not under ``root``.
        transform: Applied to each PIL image.
        mode: PIL mode to convert to; the faces are greyscale (``"L"``).
        url: Where to download from (``http(s)://`` or ``file://``).
        progress: Show a download progress bar.

    Examples:
        >>> faces = ATTFaces("../shared/data/att_faces")  # doctest: +SKIP
        >>> len(faces), len(faces.classes)  # doctest: +SKIP
        (400, 40)
    """

    def __init__(
        self,
        root: str | os.PathLike,
        download: bool = False,
        transform: Callable[[Any], Any] | None = None,
        mode: str | None = "L",
        url: str | None = None,
        progress: bool = False,
    ) -> None:
        folder = find_att_folder(root)
        if folder is None:
            if not download:
                raise DataError(
                    f"the AT&T faces are not under {root}: pass download=True (CLI: "
                    "--download) or point root at the folder holding s1..s40"
                )
            folder = download_att_faces(root, url=url, progress=progress)
        self.folder = folder
        super().__init__(folder, transform=transform, mode=mode)


def _has_att_layout(path: Path) -> bool:
    return all((path / f"s{i}").is_dir() for i in range(1, NUM_PEOPLE + 1))


def find_att_folder(root: str | os.PathLike) -> Path | None:
    """The folder holding ``s1``..``s40`` at ``root`` or ``root/att_faces``, or None.

    Examples:
        >>> find_att_folder("/no/such/place") is None
        True
    """
    for candidate in (Path(root), Path(root) / FOLDER_NAME):
        if candidate.is_dir() and _has_att_layout(candidate):
            return candidate
    return None


def download_att_faces(
    root: str | os.PathLike, url: str | None = None, progress: bool = False
) -> Path:
    """Download, check and extract the AT&T faces into ``root/att_faces``; return that path.

    An archive already downloaded and valid is not fetched again; a folder
    already extracted is not touched.

    Raises:
        DownloadError: the download failed, or the archive is not the AT&T
            faces, or a member would be written outside ``root``, or the
            archive breaks a size cap (see the module's documentation), or
            ``root/att_faces`` is taken (by a folder of something else or a link).

    Examples:
        >>> folder = download_att_faces("data")  # doctest: +SKIP
        >>> sorted(p.name for p in folder.iterdir())[:3]  # doctest: +SKIP
        ['s1', 's10', 's11']
    """
    root = Path(root)
    existing = find_att_folder(root)
    if existing is not None:
        return existing
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DownloadError(f"cannot create the folder {root} for the AT&T faces: {err}") from None
    archive = root / ARCHIVE_NAME
    if not (archive.is_file() and _is_valid_archive(archive)):
        _fetch(url or os.environ.get("SIAMKIT_ATT_URL") or ATT_URL, archive, progress)
    members = check_att_archive(archive)
    target = root / FOLDER_NAME
    _extract_safely(archive, members, target)
    return target


def _fetch(url: str, destination: Path, progress: bool) -> None:
    # A fresh name (O_EXCL): a link planted at a fixed ".part" name would be followed.
    try:
        handle, name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part",
                                        dir=destination.parent)  # fmt: skip
    except OSError as err:
        raise DownloadError(f"cannot write the download into {destination.parent}: {err}") from None
    partial = Path(name)
    honour_umask(handle)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=60) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            _check_archive_size(total or 0)
            bar = _progress_bar(total, progress, destination.name)
            received = 0
            while block := response.read(_CHUNK):
                received += len(block)
                _check_archive_size(received)
                out.write(block)
                bar.update(len(block))
            bar.close()
        if total is not None and received != total:
            # urllib ends a cut-off transfer quietly; the length tells.
            raise OSError(f"the transfer stopped after {received} of {total} bytes")
        os.replace(partial, destination)
    except (urllib.error.URLError, OSError, ValueError) as err:
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"could not download the AT&T faces from {url}: {err}. Check the address "
            "(or set SIAMKIT_ATT_URL), or download att_faces.zip yourself into "
            f"{destination.parent}"
        ) from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _check_archive_size(size: int) -> None:
    if size > MAX_ARCHIVE_BYTES:
        raise OSError(
            f"the archive is larger than {MAX_ARCHIVE_BYTES} bytes, far more than the AT&T "
            "faces (about 3.7 MB): refusing it"
        )


def _progress_bar(total: int | None, enabled: bool, name: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not enabled)


def _is_valid_archive(archive: Path) -> bool:
    try:
        check_att_archive(archive)
    except DownloadError:
        return False
    return True


def check_att_archive(archive: str | os.PathLike) -> list[zipfile.ZipInfo]:
    """Check a zip holds the AT&T faces and nothing dangerous; return its members.

    Raises:
        DownloadError: not a zip, not 40 people × 10 images, a member whose
            path is absolute, climbs out with ``..``, is a link or collides with
            another, or sizes beyond the caps (see the module's documentation).

    Examples:
        >>> import io, tempfile, zipfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "att_faces.zip")
        >>> with zipfile.ZipFile(path, "w") as zf:
        ...     zf.writestr("../evil.pgm", b"x")
        >>> check_att_archive(path)
        Traceback (most recent call last):
        ...
        siamkit.exceptions.DownloadError: refusing archive member '../evil.pgm': ...
    """
    try:
        _check_archive_size(os.stat(archive).st_size)
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            _check_members(archive, members)
            bad = zf.testzip()  # decompresses: only after the sizes are known to be sane
    except DownloadError:
        raise
    except Exception as err:  # zipfile raises many types on a hostile file
        raise DownloadError(
            f"{archive} is not a valid zip archive ({err or type(err).__name__}); delete it "
            "and retry"
        ) from None
    if bad is not None:
        raise DownloadError(f"{archive} is corrupted (bad CRC in {bad}); delete it and retry")
    _check_layout(archive, members)
    return members


def _check_members(archive: str | os.PathLike, members: list[zipfile.ZipInfo]) -> None:
    if len(members) > MAX_MEMBERS:
        raise DownloadError(
            f"{archive} lists {len(members)} members, more than {MAX_MEMBERS}: it is not the "
            "AT&T faces (about 450); delete it"
        )
    for member in members:
        _check_member_is_safe(member)
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > _RATIO_CHECKED_ABOVE and ratio > MAX_COMPRESSION_RATIO:
            raise DownloadError(
                f"refusing archive member {member.filename!r}: it compresses {ratio:.0f}:1 "
                f"(above {MAX_COMPRESSION_RATIO}:1), like a zip bomb; delete {archive}"
            )
    total = sum(member.file_size for member in members)
    if total > MAX_EXTRACTED_BYTES:
        raise DownloadError(
            f"{archive} would extract to {total} bytes, more than {MAX_EXTRACTED_BYTES} "
            "(the AT&T faces take about 4.2 MB): refusing it; delete it"
        )
    _check_no_collisions(archive, members)


def _check_no_collisions(archive: str | os.PathLike, members: list[zipfile.ZipInfo]) -> None:
    # A file "s1" next to "s1/1.pgm", or one name twice, cannot both be extracted.
    files: set[str] = set()
    folders: set[str] = set()
    for member in members:
        name = posixpath.normpath(member.filename.replace("\\", "/"))
        if not member.is_dir():
            if name in files:
                raise DownloadError(f"{archive} holds {member.filename!r} twice; delete it")
            files.add(name)
        parent = name if member.is_dir() else posixpath.dirname(name)
        while parent not in ("", ".", "/"):
            folders.add(parent)
            parent = posixpath.dirname(parent)
    clash = sorted(files & folders)
    if clash:
        raise DownloadError(
            f"{archive} holds {clash[0]!r} both as a file and as a folder of other members; "
            "it is not the AT&T faces archive: delete it"
        )


def _check_layout(archive: str | os.PathLike, members: list[zipfile.ZipInfo]) -> None:
    images: dict[int, set[int]] = {}
    for member in members:
        match = _MEMBER.search(member.filename)
        if match:
            images.setdefault(int(match.group(1)), set()).add(int(match.group(2)))
    complete = all(
        images.get(person) == set(range(1, IMAGES_PER_PERSON + 1))
        for person in range(1, NUM_PEOPLE + 1)
    )
    prefixes = {
        m.filename[: _MEMBER.search(m.filename).start()]
        for m in members
        if _MEMBER.search(m.filename)
    }
    if len(prefixes) > 1:
        raise DownloadError(
            f"{archive} holds face folders under several top folders ({sorted(prefixes)}); "
            "expected one set of s1..s40"
        )
    if not complete:
        raise DownloadError(
            f"{archive} is not the AT&T faces archive: expected {NUM_PEOPLE} folders s1..s40 "
            f"of {IMAGES_PER_PERSON} .pgm images each, found {len(images)} people"
        )


def _check_member_is_safe(member: zipfile.ZipInfo) -> None:
    name = member.filename
    parts = PurePosixPath(name.replace("\\", "/")).parts
    is_link = stat.S_ISLNK(member.external_attr >> 16)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts or is_link:
        raise DownloadError(
            f"refusing archive member {name!r}: it would be written outside the target "
            "folder (absolute path, '..' or a link)"
        )


def _prefix_of(members: list[zipfile.ZipInfo]) -> str:
    # The official archive has s1/ at its top; repackaged ones nest it in a folder.
    for member in members:
        match = _MEMBER.search(member.filename)
        if match:
            return member.filename[: match.start() + (1 if match.group(0).startswith("/") else 0)]
    return ""


def _extract_safely(archive: Path, members: list[zipfile.ZipInfo], target: Path) -> None:
    if os.path.lexists(target):  # lexists: a dangling link is there too
        kind = "a link" if target.is_symlink() else "there"
        raise DownloadError(
            f"{target} is {kind} but does not hold the 40 folders s1..s40: remove it and retry"
        )
    prefix = _prefix_of(members)
    try:
        staging = Path(tempfile.mkdtemp(prefix=".att_faces.", dir=target.parent))
    except OSError as err:
        raise DownloadError(f"cannot extract the AT&T faces into {target.parent}: {err}") from None
    try:
        with zipfile.ZipFile(archive) as zf:
            written = 0
            for member in members:
                if member.is_dir() or not member.filename.startswith(prefix):
                    continue
                destination = _destination(staging, member, prefix)
                destination.parent.mkdir(parents=True, exist_ok=True)
                written += _copy_member(zf, member, destination, MAX_EXTRACTED_BYTES - written)
        with contextlib.suppress(OSError):  # mkdtemp makes it 0700; mkdir would not
            staging.chmod(0o777 & ~current_umask())
        os.replace(staging, target)  # the folder appears whole or not at all
    except DownloadError:
        raise
    except Exception as err:  # zipfile and the file system raise many types
        raise DownloadError(
            f"could not extract {archive} into {target}: {err or type(err).__name__}. Delete "
            "the archive and retry"
        ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staging)


def _destination(staging: Path, member: zipfile.ZipInfo, prefix: str) -> Path:
    destination = (staging / member.filename[len(prefix) :]).resolve()
    if not destination.is_relative_to(staging.resolve()):
        raise DownloadError(f"refusing archive member {member.filename!r}")
    return destination


def _copy_member(
    zf: zipfile.ZipFile, member: zipfile.ZipInfo, destination: Path, budget: int
) -> int:
    """Extract one member, counting what is really written: the zip directory may lie."""
    written = 0
    with zf.open(member) as src, open(destination, "xb") as dst:  # "x": never overwrite
        while block := src.read(_CHUNK):
            written += len(block)
            if written > member.file_size or written > budget:
                raise DownloadError(
                    f"refusing archive member {member.filename!r}: it extracts to more than "
                    f"{min(member.file_size, budget)} bytes (its declared size, or what is "
                    f"left of the {MAX_EXTRACTED_BYTES}-byte cap); delete the archive"
                )
            dst.write(block)
    return written
