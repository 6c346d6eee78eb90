"""The AT&T (ORL) face database, with a safe downloader.

40 people × 10 greyscale 92×112 images, taken between 1992 and 1994 at the
Olivetti Research Laboratory in Cambridge, UK. Credit: Olivetti Research
Laboratory (F. Samaria and A. Harter, "Parameterisation of a stochastic model
for human face identification", 2nd IEEE Workshop on Applications of Computer
Vision, 1994).
"""

from __future__ import annotations

import contextlib
import os
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

from siamkit.data.folder import FaceFolder
from siamkit.exceptions import DataError, DownloadError

ATT_URL = "https://www.cl.cam.ac.uk/research/dtg/attarchive/pub/data/att_faces.zip"
ARCHIVE_NAME = "att_faces.zip"
FOLDER_NAME = "att_faces"
NUM_PEOPLE = 40
IMAGES_PER_PERSON = 10
_MEMBER = re.compile(r"(?:^|/)s(\d+)/(\d+)\.pgm$")


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

    Example:
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

    Example:
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
            faces, or a member would be written outside ``root``.

    Example:
        >>> folder = download_att_faces("data")  # doctest: +SKIP
        >>> sorted(p.name for p in folder.iterdir())[:3]  # doctest: +SKIP
        ['s1', 's10', 's11']
    """
    root = Path(root)
    existing = find_att_folder(root)
    if existing is not None:
        return existing
    root.mkdir(parents=True, exist_ok=True)
    archive = root / ARCHIVE_NAME
    if not (archive.is_file() and _is_valid_archive(archive)):
        _fetch(url or os.environ.get("SIAMKIT_ATT_URL") or ATT_URL, archive, progress)
    members = check_att_archive(archive)
    target = root / FOLDER_NAME
    _extract_safely(archive, members, target)
    return target


def _fetch(url: str, destination: Path, progress: bool) -> None:
    partial = destination.with_name(destination.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            bar = _progress_bar(total, progress, destination.name)
            received = 0
            while block := response.read(1 << 16):
                out.write(block)
                received += len(block)
                bar.update(len(block))
            bar.close()
        if total is not None and received != total:
            # urllib ends a cut-off transfer quietly; the length tells.
            raise OSError(f"the transfer stopped after {received} of {total} bytes")
    except (urllib.error.URLError, OSError, ValueError) as err:
        partial.unlink(missing_ok=True)
        raise DownloadError(
            f"could not download the AT&T faces from {url}: {err}. Check the address "
            "(or set SIAMKIT_ATT_URL), or download att_faces.zip yourself into "
            f"{destination.parent}"
        ) from None
    os.replace(partial, destination)


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
        DownloadError: not a zip, not 40 people × 10 images, or a member whose
            path is absolute, climbs out with ``..``, or is a link.

    Example:
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
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            bad = zf.testzip()
    except (zipfile.BadZipFile, OSError) as err:
        raise DownloadError(
            f"{archive} is not a valid zip archive ({err}); delete it and retry"
        ) from None
    if bad is not None:
        raise DownloadError(f"{archive} is corrupted (bad CRC in {bad}); delete it and retry")
    for member in members:
        _check_member_is_safe(member)
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
    return members


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
    if target.exists():
        raise DownloadError(
            f"{target} exists but does not hold the 40 folders s1..s40: remove it and retry"
        )
    prefix = _prefix_of(members)
    staging = Path(tempfile.mkdtemp(prefix=".att_faces.", dir=target.parent))
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in members:
                if member.is_dir() or not member.filename.startswith(prefix):
                    continue
                relative = member.filename[len(prefix) :]
                destination = (staging / relative).resolve()
                if not destination.is_relative_to(staging.resolve()):
                    raise DownloadError(f"refusing archive member {member.filename!r}")
                destination.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(destination, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        os.replace(staging, target)  # the folder appears whole or not at all
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(staging)
