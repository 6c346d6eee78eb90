"""The service's API keys: roles, scopes, the hashed keys file, concurrent changes, the CLI."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import stat
from pathlib import Path

import pytest

from siamkit.cli.main import main
from siamkit.exceptions import ConfigError, KeyFileError
from siamkit.serve import ROLES, KeyFile, authenticate

ACTIONS = ("admin", "enrol", "query")


def test_a_key_is_kept_only_as_its_hash(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "keys.json")
    made = keys.add("door camera", "query", galleries=["staff"])
    text = (tmp_path / "keys.json").read_text()
    assert made.secret not in text and made.secret.split("_", 2)[2] not in text
    entry = json.loads(text)["keys"][0]
    assert entry["sha256"] == hashlib.sha256(made.secret.encode()).hexdigest()
    assert entry["id"] == made.key.id and made.secret.startswith(f"sk_{made.key.id}_")
    assert len(made.secret.split("_", 2)[2]) >= 43  # 32 random bytes, base64url
    assert stat.S_IMODE((tmp_path / "keys.json").stat().st_mode) == 0o600
    assert keys.authenticate(made.secret) == made.key


def test_wrong_revoked_and_malformed_keys_are_refused(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "keys.json")
    made, other = keys.add("a", "admin"), keys.add("b", "query")
    wrong_secret = made.secret[:-1] + ("A" if made.secret[-1] != "A" else "B")
    for presented in (wrong_secret, f"sk_{made.key.id}_", "", "sk_", "Bearer x", "é" * 99):
        assert keys.authenticate(presented) is None, presented
    assert authenticate(keys.load(), None) is None  # type: ignore[arg-type]
    assert keys.revoke(made.key.id) == made.key
    assert keys.authenticate(made.secret) is None
    assert keys.authenticate(other.secret) == other.key  # the other key is untouched
    with pytest.raises(KeyFileError, match="no key 'nope'"):
        keys.revoke("nope")
    assert [k.id for k in keys.list_keys()] == [other.key.id]


@pytest.mark.parametrize("role", sorted(ROLES))
def test_each_role_allows_its_part_only_and_in_its_galleries(tmp_path: Path, role: str) -> None:
    keys = KeyFile(tmp_path / "keys.json")
    scoped = keys.authenticate(keys.add("s", role, galleries=["lobby", "lab"]).secret)
    everywhere = keys.authenticate(keys.add("e", role).secret)
    assert scoped is not None and everywhere is not None
    expected = {"admin": set(ACTIONS), "enrol": {"enrol"}, "query": {"query"}}[role]
    for action in ACTIONS:
        allowed = action in expected
        assert scoped.allows(action, "lobby") is allowed
        assert scoped.allows(action, "lab") is allowed
        assert scoped.allows(action, "garage") is False
        assert everywhere.allows(action, "garage") is allowed
        assert everywhere.allows(action) is allowed


def test_bad_names_roles_and_files_get_clear_errors(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "keys.json")
    for name in ("../x", ".", "..", "a/b", "", " x", "x" * 65, "a\nb"):
        with pytest.raises(ConfigError, match="not a plain name"):
            keys.add("k", "query", galleries=[name])
    with pytest.raises(ConfigError, match="unknown role 'root'"):
        keys.add("k", "root")
    with pytest.raises(ConfigError, match="at least one gallery"):
        keys.add("k", "query", galleries=[])
    assert not (tmp_path / "keys.json").exists()  # nothing was written by a refused add
    for text, message in (
        ("{", "not JSON"),
        ('{"format": "other"}', "not a siamkit API keys file"),
        ('{"format": "siamkit-api-keys", "version": 9, "keys": []}', "version 9"),
        ('{"format": "siamkit-api-keys", "version": 1, "keys": [{"id": 1}]}', "malformed"),
    ):
        (tmp_path / "keys.json").write_text(text)
        with pytest.raises(KeyFileError, match=message):
            keys.authenticate("sk_x")
        with pytest.raises(KeyFileError, match=message):
            keys.add("k", "query")
        assert (tmp_path / "keys.json").read_text() == text  # a bad file is never overwritten


def _add_keys(path: str, start: int, count: int) -> None:
    keys = KeyFile(path)
    for i in range(start, start + count):
        keys.add(f"key {i}", "query")


def test_concurrent_adds_from_two_processes_keep_every_key(tmp_path: Path) -> None:
    path = str(tmp_path / "keys.json")
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_add_keys, args=(path, n * 10, 10)) for n in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    for worker in workers:
        if worker.is_alive():
            worker.kill()
    assert [worker.exitcode for worker in workers] == [0, 0]
    names = sorted(k.name for k in KeyFile(path).list_keys())
    assert names == sorted(f"key {i}" for i in range(20))


def test_cli_adds_lists_and_revokes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "keys.json")
    assert main(["serve", "keys", "add", "--keys", path, "--name", "kiosk", "--role", "enrol",
                 "--gallery", "lobby"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    secret = next(word for word in out.split() if word.startswith("sk_"))
    key = KeyFile(path).authenticate(secret)
    assert key is not None and key.role == "enrol" and key.galleries == ("lobby",)
    assert main(["serve", "keys", "list", "--keys", path, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed == [key.to_dict()] and secret not in json.dumps(listed)
    assert main(["serve", "keys", "revoke", "--keys", path, key.id]) == 0
    assert f"revoked key {key.id}" in capsys.readouterr().out
    assert main(["serve", "keys", "revoke", "--keys", path, key.id]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no key" in err and "Traceback" not in err


def test_a_revocation_by_another_process_takes_effect_at_once(tmp_path: Path) -> None:
    server, admin = KeyFile(tmp_path / "keys.json"), KeyFile(tmp_path / "keys.json")
    made = admin.add("door", "query")
    assert server.authenticate(made.secret) == made.key
    entries = server.load()
    assert server.load() is entries  # unchanged file: not parsed again
    admin.revoke(made.key.id)  # another KeyFile, as `siamkit serve keys revoke` would be
    assert server.authenticate(made.secret) is None
