"""Reading the JSON manifests of saved models and indexes, with errors that say what to do."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from siamkit._version import __version__
from siamkit.exceptions import SiamkitError

#: How deep JSON that siamkit reads may nest: far more than any file siamkit
#: writes needs, far less than Python's recursion limit.
MAX_JSON_DEPTH = 64


def parse_json(text: str | bytes, *, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` that refuses nesting deeper than ``max_depth`` with ``ValueError``.

    Python's parser recurses once per level, so a hand-made file nested 100,000
    deep would raise ``RecursionError`` from deep inside it; the same holds for
    any code that later walks the value. Callers turn the ``ValueError`` into
    their file's error type, as they do for any other malformed JSON.

    Examples:
        >>> parse_json('{"a": [1, 2]}')
        {'a': [1, 2]}
        >>> parse_json("[" * 100_000)
        Traceback (most recent call last):
        ...
        ValueError: JSON nested deeper than 64 levels
        >>> parse_json("[[[1]]]", max_depth=2)
        Traceback (most recent call last):
        ...
        ValueError: JSON nested deeper than 2 levels
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {max_depth} levels") from None
    check_json_depth(value, max_depth)
    return value


def check_json_depth(value: Any, max_depth: int = MAX_JSON_DEPTH) -> None:
    """Raise ``ValueError`` if lists and dicts in ``value`` nest deeper than ``max_depth``.

    Iterative, so it never recurses itself, and it stops at the first level too
    deep, so a self-referencing value is refused rather than walked forever.

    Examples:
        >>> check_json_depth({"a": {"b": [1]}}, 3)
        >>> check_json_depth({"a": {"b": [1]}}, 2)
        Traceback (most recent call last):
        ...
        ValueError: JSON nested deeper than 2 levels
    """
    level: list[Any] = [value]
    for _ in range(max_depth + 1):
        children: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                children.extend(item.values())
            elif isinstance(item, (list, tuple)):
                children.extend(item)
        if not children:
            return
        level = children
    raise ValueError(f"JSON nested deeper than {max_depth} levels")


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
        manifest = parse_json(path.read_text())
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


_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


def is_int(value: Any) -> bool:
    """True for an int that is not a bool (JSON's ``true`` is no count).

    Examples:
        >>> is_int(3), is_int(True), is_int(3.0)
        (True, False, False)
    """
    return isinstance(value, int) and not isinstance(value, bool)


def is_sha256(value: Any) -> bool:
    """True for a lower-case hex SHA-256, as siamkit writes checksums and fingerprints.

    Examples:
        >>> is_sha256("ab" * 32), is_sha256("AB" * 32)
        (True, False)
    """
    return isinstance(value, str) and _SHA256_HEX.fullmatch(value) is not None


def field_problems(
    manifest: dict[str, Any],
    required: dict[str, Callable[[Any], bool]],
    optional: dict[str, Callable[[Any], bool]] | None = None,
) -> list[str]:
    """What is wrong with a manifest's top-level fields: unknown, missing, or failing a check.

    Args:
        manifest: The parsed manifest.
        required: Each field it must have, with the check its value must pass.
        optional: Fields it may have, with their checks.

    Examples:
        >>> field_problems({"a": 1, "b": "x", "c": 0}, {"a": is_int, "b": is_int})
        ["unknown field 'c'", "invalid b 'x'"]
        >>> field_problems({}, {"a": is_int})
        ["missing field 'a'"]
    """
    checks = {**(optional or {}), **required}
    problems = [f"unknown field {_shown(key)}" for key in sorted(set(manifest) - set(checks))]
    problems += [f"missing field {key!r}" for key in required if key not in manifest]
    problems += [
        f"invalid {key} {_shown(manifest[key])}"
        for key, ok in checks.items()
        if key in manifest and not ok(manifest[key])
    ]
    return problems


def _shown(value: Any, limit: int = 80) -> str:
    # A hostile value may be megabytes long: a message shows its start.
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."
