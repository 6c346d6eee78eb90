"""Every endpoint × every kind of key: 401 without a valid key, 403 outside the role or scope.

The table below is the access contract written out by hand; the test also checks
that it names every operation of the schema, so a new endpoint cannot ship
without a row.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import siamkit

fastapi = pytest.importorskip("fastapi", reason="the serve extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402

from siamkit.serve import KeyFile, create_app  # noqa: E402

#: (method, path template) -> the role part it needs (None: open to anyone).
ACCESS = {
    ("GET", "/health"): None,
    ("GET", "/ready"): None,
    ("GET", "/metrics"): "admin",
    ("GET", "/galleries"): "query",
    ("POST", "/galleries"): "admin",
    ("GET", "/galleries/{gallery}"): "query",
    ("DELETE", "/galleries/{gallery}"): "admin",
    ("POST", "/galleries/{gallery}/calibrate"): "admin",
    ("POST", "/galleries/{gallery}/people/{person}/faces"): "enrol",
    ("GET", "/galleries/{gallery}/people"): "enrol",
    ("DELETE", "/galleries/{gallery}/people/{person}"): "enrol",
    ("DELETE", "/galleries/{gallery}/faces/{face_id}"): "enrol",
    ("POST", "/galleries/{gallery}/identify"): "query",
    ("POST", "/galleries/{gallery}/verify"): "query",
    ("POST", "/embed"): "query",
    ("POST", "/verify"): "query",
    ("POST", "/detect"): "query",
}
ROLE_PARTS = {"admin": {"admin", "enrol", "query"}, "enrol": {"enrol"}, "query": {"query"}}


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (56, 46, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _request(method: str, template: str) -> dict:
    """A request that gets past access to the handler, for each operation."""
    url = template.format(gallery="staff", person="ann", face_id="0")
    image = ("a.png", _png(0), "image/png")
    bodies = {
        ("POST", "/galleries"): {"json": {"name": "new"}},
        ("POST", "/galleries/{gallery}/calibrate"): {"json": {"target_far": 0.1}},
        ("POST", "/galleries/{gallery}/people/{person}/faces"): {"files": {"files": image}},
        ("POST", "/galleries/{gallery}/identify"): {"files": {"file": image}},
        ("POST", "/galleries/{gallery}/verify"): {
            "files": {"file": image},
            "data": {"person": "ann"},
        },
        ("POST", "/embed"): {"files": {"file": image}},
        ("POST", "/verify"): {"files": {"a": image, "b": ("b.png", _png(1), "image/png")}},
        ("POST", "/detect"): {"files": {"file": image}},
    }
    return {"method": method, "url": url, **bodies.get((method, template), {})}


@pytest.fixture
def served(tmp_path: Path):
    keys = KeyFile(tmp_path / "keys.json")
    secrets = {(role, scope): keys.add(f"{role}-{scope}", role, galleries=[scope]).secret
               for role in ROLE_PARTS for scope in ("staff", "lab")}  # fmt: skip
    encoder = siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16)
    app = create_app(encoder, tmp_path / "galleries", keys, threshold=0.5)
    with TestClient(app) as client:
        yield client, app.state.galleries, secrets, keys


def _reset(galleries) -> None:
    """staff holds ann (two faces, ids 0 and 1) and bob, whatever the last request did."""
    for name in galleries.names():
        galleries.delete(name)
    galleries.create("staff")
    vectors = galleries.encoder.embed([Image.open(io.BytesIO(_png(n))) for n in range(3)])
    galleries.enrol("staff", "ann", list(vectors[:2]))
    galleries.enrol("staff", "bob", list(vectors[2:]))


def test_the_table_names_every_operation(served) -> None:
    client, *_ = served
    paths = client.get("/openapi.json").json()["paths"]
    operations = {(m.upper(), p) for p, item in paths.items() for m in item}
    assert operations == set(ACCESS)


def test_every_role_and_scope_on_every_endpoint(served) -> None:
    client, galleries, secrets, keys = served
    revoked = keys.add("gone", "admin").secret
    keys.revoke(next(k.id for k in keys.list_keys() if k.name == "gone"))
    checked = 0
    for (method, template), needs in ACCESS.items():
        on_gallery = "{gallery}" in template
        callers = {"nobody": None, "wrong": "sk_000000000000_x", "revoked": revoked,
                   **{f"{r}@{s}": secret for (r, s), secret in secrets.items()}}  # fmt: skip
        for caller, secret in callers.items():
            _reset(galleries)
            headers = {} if secret is None else {"X-API-Key": secret}
            answer = client.request(**_request(method, template), headers=headers)
            status, where = answer.status_code, f"{method} {template} as {caller}"
            if needs is None:
                expected = "in"
            elif "@" not in caller:
                expected = 401
            else:
                role, scope = caller.split("@")
                allowed = needs in ROLE_PARTS[role] and (not on_gallery or scope == "staff")
                expected = "in" if allowed else 403
            if expected == "in":
                assert status not in (401, 403) and status < 500, (where, answer.text)
            else:
                assert status == expected, (where, answer.text)
                assert answer.json()["error"]["code"] == {401: "unauthorized",
                                                          403: "forbidden"}[expected]  # fmt: skip
            checked += 1
    assert checked == len(ACCESS) * 9


def test_a_scoped_key_lists_only_its_galleries(served) -> None:
    client, galleries, secrets, _ = served
    _reset(galleries)
    galleries.create("lab")
    for scope in ("staff", "lab"):
        listed = client.get("/galleries", headers={"X-API-Key": secrets[("query", scope)]})
        assert [g["name"] for g in listed.json()] == [scope]
