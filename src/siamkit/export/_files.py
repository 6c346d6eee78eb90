"""Where an export writes: only a place it owns, staged first, moved into place manifest last.

An export is two files (three for a graph over 2 GB, whose weights go to
``NAME.onnx.data``). They are written into a staging folder beside the target
(``.NAME.onnx.tmp``), then renamed onto their places with the manifest last;
a failure while writing leaves the earlier export untouched, and a failure
while renaming puts back what was already renamed. This module imports no torch.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from siamkit._atomic import fsync_dir
from siamkit._manifest import parse_json
from siamkit.exceptions import ConfigError, SiamkitError, WriteError
from siamkit.model_folder.layout import EVAL_FOLDER  # siamkit eval's report; left alone
from siamkit.runtime.export_files import (
    DATA_FILE,
    FOLDER_GRAPH,
    FORMAT_NAME,
    check_export_target,
    manifest_path,
)


@dataclass
class Target:
    """Where an export goes, and what of an earlier export there it replaces.

    Attributes:
        graph: The ``.onnx`` file to write.
        earlier: The external-data files of the export there now (None: there is none).
    """

    graph: Path
    earlier: list[str] | None = field(default=None)

    @property
    def folder(self) -> Path:
        """The folder the export's files go to."""
        return self.graph.parent

    @property
    def staging(self) -> Path:
        """The folder the new files are written to first."""
        return self.folder / f".{self.graph.name}.tmp"


def check_target(path: str | os.PathLike) -> Target:
    """Where an export to ``path`` goes; refuses a place holding what siamkit did not export.

    A ``.onnx`` file may replace an earlier export of that name, never another
    file. A folder must be new, empty, or hold an earlier export (its files and
    the ``evaluation`` folder ``siamkit eval`` writes there) and nothing else:
    a model folder, say, is refused, so that ``load_encoder`` on it still
    loads the model and not a stale export.

    Raises:
        ConfigError: ``path`` is an existing file or folder siamkit did not export to.
        ModelFileError: ``path`` is not a ``.onnx`` name nor a folder.

    Examples:
        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> check_target(folder).graph.name
        'encoder.onnx'
        >>> _ = (folder / "notes.txt").write_text("mine")
        >>> check_target(folder)
        Traceback (most recent call last):
        ...
        siamkit.exceptions.ConfigError: cannot export into ...: it holds files that are not ...
    """
    path = Path(path)
    if path.exists() and not path.is_dir() and path.suffix != ".onnx":
        raise ConfigError(
            f"cannot export to {path}: it is an existing file, not a .onnx export; name a "
            "new .onnx file, or a folder (new, empty or holding an earlier export)"
        )
    target = Target(check_export_target(path))
    existing = next(p for p in target.graph.parents if p.exists() or p == p.parent)
    if existing.exists() and not existing.is_dir():
        raise ConfigError(f"cannot export to {path}: {existing} is a file, not a folder")
    target.earlier = _earlier_export(target.graph)
    if target.graph.name == FOLDER_GRAPH and target.folder == path and path.is_dir():
        _check_folder(target)
    return target


def _earlier_export(graph: Path) -> list[str] | None:
    """The data files of the siamkit export at ``graph`` (None: none there); refuses others."""
    manifest_file = manifest_path(graph)
    data_file = graph.with_name(f"{graph.name}.data")
    if not manifest_file.exists():
        for path in (graph, data_file):
            if path.exists() or path.is_symlink():
                raise ConfigError(
                    f"cannot export to {graph}: {path} exists and is not part of a siamkit "
                    f"export (there is no {manifest_file.name}); move it away or pick another name"
                )
        return None
    try:
        manifest = parse_json(manifest_file.read_bytes())
    except (OSError, ValueError):
        manifest = None
    if not (
        isinstance(manifest, dict)
        and manifest.get("format") == FORMAT_NAME
        and manifest.get("graph") == graph.name
    ):
        raise ConfigError(
            f"cannot export to {graph}: {manifest_file} exists and is not the manifest of a "
            "siamkit export of that name; move it away or pick another name"
        )
    listed = manifest.get("external_data")
    entries = listed if isinstance(listed, list) else []
    # Only plain names of siamkit's shape are ever deleted later, whatever the file says.
    names = [e.get("name") for e in entries if isinstance(e, dict)]
    earlier = [n for n in names if isinstance(n, str) and DATA_FILE.fullmatch(n)]
    if (data_file.exists() or data_file.is_symlink()) and data_file.name not in earlier:
        raise ConfigError(
            f"cannot export to {graph}: {data_file} exists and is not part of the export "
            "there; move it away or pick another name"
        )
    return earlier


def _check_folder(target: Target) -> None:
    graph = target.graph
    owned = {graph.name, manifest_path(graph).name, target.staging.name, EVAL_FOLDER}
    owned.update(target.earlier or [])
    present = sorted(p.name for p in target.folder.iterdir())
    foreign = [name for name in present if name not in owned]
    if target.earlier is None:  # no export here: anything but a killed export's staging
        foreign = [name for name in present if name != target.staging.name]
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise ConfigError(
            f"cannot export into {target.folder}: it holds files that are not from a siamkit "
            f"export ({shown}); pick a new or empty folder, so nothing there is overwritten"
        )


@contextlib.contextmanager
def writing(destination: Path) -> Iterator[None]:
    """Turn a failed write (a full disk, no permission) into a ``WriteError`` naming the file.

    The file named is where the export goes, not the staging file the
    failure happened in; errors siamkit raised on purpose pass unchanged.
    """
    try:
        yield
    except WriteError as err:  # siamkit's atomic writer names the staging file
        raise write_error(destination, err) from None
    except SiamkitError:
        raise
    except Exception as err:
        cause = _system_cause(err)
        if cause is None:
            raise
        raise write_error(destination, cause) from None


def write_error(destination: Path, err: OSError, done: str = "is unchanged") -> WriteError:
    """The ``WriteError`` for ``destination``: the file, the system's cause, the fix.

    Examples:
        >>> import errno
        >>> print(write_error(Path("m.onnx"), OSError(errno.ENOSPC, "No space left on device")))
        cannot write m.onnx: No space left on device; the earlier export there, if any, ...
    """
    code = err.errno if isinstance(err.errno, int) else None
    cause = os.strerror(code) if code is not None else (err.strerror or str(err))
    error = WriteError(
        f"cannot write {destination}: {cause}; the earlier export there, if any, {done}. "
        "Free disk space or fix the folder's permissions, then export again"
    )
    error.errno = code
    return error


def _system_cause(err: BaseException) -> OSError | None:
    """The ``OSError`` behind ``err`` (an exporter may wrap it in its own type), if any."""
    seen: BaseException | None = err
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, OSError) and not isinstance(seen, SiamkitError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@contextlib.contextmanager
def staging(target: Target) -> Iterator[Path]:
    """A fresh staging folder beside the target, removed afterwards whatever happens."""
    with writing(target.folder):
        target.folder.mkdir(parents=True, exist_ok=True)
        _remove(target.staging)  # a killed export's
        target.staging.mkdir()
    try:
        yield target.staging
    finally:
        _remove(target.staging)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def move_into_place(target: Target, names: list[str]) -> None:
    """Rename the staged files ``names`` onto their places in order: put the manifest last.

    A failure puts back the files already renamed (the earlier export's, kept
    as hard links or copies until the end), so the earlier export stays whole.
    Then the earlier export's data files that the new one has not are deleted.

    Raises:
        WriteError: a file could not be renamed or kept.
    """
    keep = target.staging / ".earlier"
    moved: list[str] = []
    try:
        keep.mkdir()
        for name in names:
            if (target.folder / name).exists():
                _keep(target.folder / name, keep / name)
            os.replace(target.staging / name, target.folder / name)
            moved.append(name)
    except OSError as err:
        _put_back(target.folder, keep, moved)
        raise write_error(target.folder / names[-1], err, "was put back") from None
    fsync_dir(target.folder)
    for name in set(target.earlier or []) - set(names):
        with contextlib.suppress(OSError):
            (target.folder / name).unlink()


def _keep(path: Path, copy: Path) -> None:
    try:
        os.link(path, copy)
    except OSError:  # a file system without hard links
        shutil.copy2(path, copy)


def _put_back(folder: Path, keep: Path, moved: list[str]) -> None:
    for name in reversed(moved):
        with contextlib.suppress(OSError):
            if (keep / name).exists():
                os.replace(keep / name, folder / name)
            else:
                (folder / name).unlink()
