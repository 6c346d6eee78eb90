"""API keys of the face-search service: roles, gallery scopes, a hashed keys file.

A key is shown once, when it is made (``sk_<id>_<secret>``, 32 random bytes
of secret); the file keeps its id, name, role, galleries and the SHA-256 of
the whole key, never the key. Checking a presented key costs the same time
whether or not its id exists and whatever its bytes (:func:`hmac.compare_digest`).
A random 256-bit secret needs no slow password hash: there is nothing to guess.

Roles (:data:`ROLES`): ``admin`` manages galleries and keys and may do
everything; ``enrol`` adds and removes faces; ``query`` identifies,
verifies, detects and embeds. A key works on the galleries it names, or on
all (``"*"``).

Examples:
    >>> import tempfile, pathlib
    >>> keys = KeyFile(pathlib.Path(tempfile.mkdtemp()) / "keys.json")
    >>> made = keys.add("door camera", "query", galleries=["staff"])
    >>> keys.authenticate(made.secret).allows("query", "staff")
    True
    >>> keys.authenticate(made.secret).allows("enrol", "staff")
    False
    >>> keys.authenticate("sk_nope_nope") is None
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from siamkit._atomic import write_json
from siamkit._locks import acquire, release
from siamkit.exceptions import ConfigError, KeyFileError, LockTimeoutError

#: What each role may do: ``admin`` everything, the others their own part.
ROLES: dict[str, frozenset[str]] = {
    "admin": frozenset({"admin", "enrol", "query"}),
    "enrol": frozenset({"enrol"}),
    "query": frozenset({"query"}),
}
ALL_GALLERIES = "*"
FORMAT_NAME, FORMAT_VERSION = "siamkit-api-keys", 1
_PREFIX = "sk_"
_ID = re.compile(r"[a-z0-9]{12}")
#: A plain name (a gallery's, a person's, a key's): 1-64 letters, digits, ``_ . -`` and
#: inner spaces, starting with a letter, a digit or ``_``. The API schema declares it too.
NAME_PATTERN = r"^[A-Za-z0-9_](?:[A-Za-z0-9_. -]{0,62}[A-Za-z0-9_.-])?$"
_NAME = re.compile(NAME_PATTERN)
_FIELDS = {"id", "name", "role", "galleries", "created", "sha256"}
_LOCK_TIMEOUT = 10.0
# Compared against when a presented id is unknown, so that costs what a known id costs.
_DUMMY = hashlib.sha256(b"siamkit: no such key").hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """One key as the keys file holds it (no secret).

    Attributes:
        id: The public part of the key, 12 characters: what ``revoke`` takes.
        name: What it is for, e.g. ``"door camera"``.
        role: ``"admin"``, ``"enrol"`` or ``"query"``.
        galleries: The galleries it works on; ``("*",)`` for all.
        created: When it was made (ISO 8601, UTC).
    """

    id: str
    name: str
    role: str
    galleries: tuple[str, ...]
    created: str

    def allows(self, action: str, gallery: str | None = None) -> bool:
        """Whether this key may do ``action`` (a role's part) on ``gallery`` (None: no gallery).

        Examples:
            >>> key = ApiKey("a" * 12, "kiosk", "enrol", ("lobby",), "2026-01-01T00:00:00Z")
            >>> key.allows("enrol", "lobby"), key.allows("enrol", "lab"), key.allows("admin")
            (True, False, False)
        """
        if action not in ROLES[self.role]:
            return False
        return gallery is None or ALL_GALLERIES in self.galleries or gallery in self.galleries

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, without the secret (what ``keys list`` shows)."""
        return {"id": self.id, "name": self.name, "role": self.role,
                "galleries": list(self.galleries), "created": self.created}  # fmt: skip


@dataclass(frozen=True)
class NewKey:
    """A key just made: :attr:`secret` is shown this once and kept nowhere."""

    key: ApiKey
    secret: str


class KeyFile:
    """The keys file of a service: add, list, revoke and check keys.

    The file is JSON, written atomically and readable by its owner only; changes
    hold a lock beside it (``<file>.lock``), so two ``keys add`` at once both
    keep their key.

    Args:
        path: The keys file; it need not exist until the first :meth:`add`.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._seen: tuple[Any, list[dict[str, Any]]] | None = None  # (the file's stat, entries)

    def add(self, name: str, role: str, galleries: Iterable[str] = (ALL_GALLERIES,)) -> NewKey:
        """Make a key; its secret comes back once, in the result.

        Raises:
            ConfigError: an unknown role, or a name or gallery that is not a plain name.
        """
        key = ApiKey(secrets.token_hex(6), check_name(name, "key name"), check_role(role),
                     _galleries(galleries), _now())  # fmt: skip
        secret = f"{_PREFIX}{key.id}_{secrets.token_urlsafe(32)}"
        with self._changing() as entries:
            entries.append({**key.to_dict(), "sha256": _digest(secret)})
        return NewKey(key, secret)

    def list_keys(self) -> list[ApiKey]:
        """Every key, oldest first."""
        return [_key(entry) for entry in self._read()]

    def revoke(self, key_id: str) -> ApiKey:
        """Remove the key ``key_id``; a service that reloads the file refuses it from then on.

        Raises:
            KeyFileError: no key has that id.
        """
        with self._changing() as entries:
            found = [entry for entry in entries if entry["id"] == key_id]
            if not found:
                raise KeyFileError(
                    f"no key {key_id!r} in {self.path}: `siamkit serve keys list` shows the ids"
                )
            entries.remove(found[0])
        return _key(found[0])

    def authenticate(self, presented: str) -> ApiKey | None:
        """The key ``presented`` is, or None: a wrong, revoked or malformed key."""
        return authenticate(self.load(), presented)

    def load(self) -> list[dict[str, Any]]:
        """The file's entries, checked; read again only when the file changed.

        A service calls it on every request: one ``stat``, and a parse only after
        a ``keys add`` or ``revoke`` (each writes a new file, so a new inode).
        """
        try:
            info = self.path.stat()
        except FileNotFoundError:
            return []
        except OSError as err:
            raise KeyFileError(f"cannot read the keys file {self.path}: {err}") from None
        stamp = (info.st_ino, info.st_dev, info.st_mtime_ns, info.st_size)
        if self._seen is None or self._seen[0] != stamp:
            self._seen = (stamp, self._read())
        return self._seen[1]

    def _read(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as err:
            raise KeyFileError(f"cannot read the keys file {self.path}: {err}") from None
        return parse_keys(text, self.path)

    @contextlib.contextmanager
    def _changing(self) -> Iterator[list[dict[str, Any]]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_name(self.path.name + ".lock")
        with open(lock, "ab") as handle:
            if not acquire(handle, _LOCK_TIMEOUT):
                raise LockTimeoutError(
                    f"another process has been changing {self.path} for over "
                    f"{_LOCK_TIMEOUT:g} s ({lock} is locked): try again"
                )
            try:
                entries = self._read()
                yield entries
                write_json(self.path, {"format": FORMAT_NAME, "version": FORMAT_VERSION,
                                       "keys": entries})  # fmt: skip
                os.chmod(self.path, 0o600)
            finally:
                release(handle)


def authenticate(entries: list[dict[str, Any]], presented: str) -> ApiKey | None:
    """The entry of ``entries`` that ``presented`` is, compared in constant time; else None.

    Examples:
        >>> authenticate([], "sk_0123456789ab_secret") is None
        True
    """
    key_id = presented[len(_PREFIX) : len(_PREFIX) + 12] if isinstance(presented, str) else ""
    entry = next((e for e in entries if e["id"] == key_id), None)
    digest = _digest(presented) if isinstance(presented, str) else _DUMMY
    matches = hmac.compare_digest(digest, _DUMMY if entry is None else entry["sha256"])
    return _key(entry) if entry is not None and matches else None


def parse_keys(text: str, where: Any = "the keys file") -> list[dict[str, Any]]:
    """The checked entries of a keys file's text.

    Raises:
        KeyFileError: not JSON, not a siamkit keys file, or an entry malformed.
    """
    try:
        data = json.loads(text)
    except ValueError as err:
        raise KeyFileError(f"{where} is not JSON ({err}): restore it or make keys anew") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT_NAME:
        raise KeyFileError(f"{where} is not a siamkit API keys file")
    if data.get("version") != FORMAT_VERSION:
        raise KeyFileError(f"{where} has version {data.get('version')!r}; this siamkit reads "
                           f"{FORMAT_VERSION}: upgrade siamkit")  # fmt: skip
    entries = data.get("keys")
    if not isinstance(entries, list) or not all(_well_formed(e) for e in entries):
        raise KeyFileError(f"{where} holds a malformed key entry: revoke or remake the keys")
    if len({e["id"] for e in entries}) != len(entries):
        raise KeyFileError(f"{where} holds two keys with one id")
    return entries


def check_role(role: str) -> str:
    """``role`` if it is one of :data:`ROLES`; else a ConfigError naming them."""
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    return role


def check_name(name: Any, what: str = "gallery name") -> str:
    """``name`` if it is a plain name (letters, digits, ``_ . -`` and spaces, 1-64).

    Examples:
        >>> check_name("staff-2026")
        'staff-2026'
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"the {what} {name!r} is not a plain name: use 1-64 letters, "
                          "digits, '_', '.', '-' or inner spaces, starting with a letter, "
                          "a digit or '_'")  # fmt: skip
    return name


def _galleries(galleries: Iterable[str]) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(galleries if not isinstance(galleries, str) else [galleries]))
    if not names:
        raise ConfigError("a key needs at least one gallery, or '*' for all")
    if ALL_GALLERIES in names:
        return (ALL_GALLERIES,)
    return tuple(check_name(name) for name in names)


def _well_formed(entry: Any) -> bool:
    if not isinstance(entry, dict) or set(entry) != _FIELDS:
        return False
    galleries = entry["galleries"]
    return (isinstance(entry["id"], str) and bool(_ID.fullmatch(entry["id"]))
            and entry["role"] in ROLES and isinstance(entry["name"], str)
            and isinstance(entry["created"], str) and isinstance(entry["sha256"], str)
            and bool(re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]))
            and isinstance(galleries, list) and bool(galleries)
            and all(isinstance(g, str) for g in galleries))  # fmt: skip


def _key(entry: dict[str, Any]) -> ApiKey:
    return ApiKey(entry["id"], entry["name"], entry["role"], tuple(entry["galleries"]),
                  entry["created"])  # fmt: skip


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
