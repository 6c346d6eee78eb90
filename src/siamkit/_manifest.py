"""Reading the JSON manifests of saved models and indexes, with errors that say what to do."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from siamkit._version import __version__
from siamkit.exceptions import SiamkitError


def read_manifest(
    path: Path,
    *,
    format_name: str,
    max_version: int,
    error: type[SiamkitError],
    what: str,
    missing: str,
    resave: str,
) -> dict[str, Any]:
    """Load ``path`` and check it is a ``format_name`` manifest this siamkit can read.

    Args:
        path: The manifest file.
        format_name: The value its ``format`` field must have.
        max_version: The newest ``format_version`` this siamkit reads.
        error: The exception type to raise.
        what: What the manifest describes, for messages ("encoder manifest").
        missing: The message when the file does not exist.
        resave: How to get a good file again ("save the model again").

    Examples:
        >>> import tempfile, pathlib
        >>> from siamkit.exceptions import ModelFileError
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "m.json"
        >>> _ = p.write_text('{"format": "x", "format_version": 1}')
        >>> read_manifest(p, format_name="x", max_version=1, error=ModelFileError,
        ...               what="x manifest", missing="", resave="")["format"]
        'x'
    """
    if not path.is_file():
        raise error(missing)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise error(f"{path} is corrupted ({err}); {resave}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != format_name:
        raise error(f"{path} is not a siamkit {what}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise error(f"{path} has an invalid format version {version!r}; {resave}")
    if version > max_version:
        raise error(
            f"{path} has format version {version!r}, newer than this siamkit "
            f"({__version__}) reads ({max_version}); upgrade siamkit"
        )
    return manifest


def plain_file_name(
    name: Any, pattern: re.Pattern[str], *, error: type[SiamkitError], manifest: Path
) -> str:
    """``name`` if it is a file name siamkit writes (``pattern``), else ``error``.

    A manifest may have been edited by someone else: a name that is absolute,
    climbs out with ``..`` or holds a separator would make siamkit read, write
    or delete a file outside the folder. Only names of the exact shape siamkit
    gives its own files pass, so nothing is ever touched before this check.

    Examples:
        >>> import re, pathlib
        >>> from siamkit.exceptions import ModelFileError
        >>> pattern = re.compile(r"encoder-[0-9a-f]{16}\\.pt")
        >>> plain_file_name("encoder-0123456789abcdef.pt", pattern,
        ...                 error=ModelFileError, manifest=pathlib.Path("m.json"))
        'encoder-0123456789abcdef.pt'
        >>> plain_file_name("../../etc/passwd", pattern,
        ...                 error=ModelFileError, manifest=pathlib.Path("m.json"))
        Traceback (most recent call last):
        ...
        siamkit.exceptions.ModelFileError: m.json names the file '../../etc/passwd', ...
    """
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise error(
            f"{manifest} names the file {name!r}, which is not a file siamkit writes there "
            f"(expected a plain name like {pattern.pattern!r}): the manifest was edited or "
            "damaged. Nothing was read, written or deleted; save it again from the original"
        )
    return name
