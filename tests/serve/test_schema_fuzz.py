"""The API fuzzed against its own OpenAPI schema (schemathesis): no 5xx, one error shape.

Every operation gets generated requests, with an admin key (so they reach the
handlers) and, some of the time, the name of a gallery that exists and holds
faces (so identify, verify and the people routes run past "not found"). Each
answer must be documented by the schema, match it, and every failure must be
``{"error": {"code", "message"}}``. The examples per operation are bounded so the
whole run stays within about a minute on two cores.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import siamkit

schemathesis = pytest.importorskip("schemathesis", reason="the dev extra lacks schemathesis")
pytest.importorskip("fastapi", reason="the serve extra is not installed")
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    negative_data_rejection,
    positive_data_acceptance,
)

GALLERY = "staff"
EXAMPLES = 60  # per operation: bounded in count, so the run is bounded in time


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (56, 46, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _served() -> tuple[object, dict[str, str], Path]:
    from siamkit.serve import KeyFile, create_app

    root = Path(tempfile.mkdtemp(prefix="siamkit-fuzz-"))
    keys = KeyFile(root / "keys.json")
    headers = {"X-API-Key": keys.add("fuzzer", "admin").secret}
    encoder = siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16)
    return create_app(encoder, root / "galleries", keys, threshold=0.5), headers, root


# Built at collection: schemathesis reads the schema to make one test per operation.
APP, HEADERS, ROOT = _served()


def _coin(parameters: dict) -> bool:
    """Heads or tails, the same on every run for the same case (not Python's salted hash)."""
    return sum(map(ord, repr(sorted(parameters.items())))) % 2 == 1


schema = schemathesis.openapi.from_asgi("/openapi.json", APP)


@pytest.fixture(scope="module", autouse=True)
def _stop_app() -> Iterator[None]:
    yield
    APP.state.galleries.close()  # type: ignore[attr-defined]
    shutil.rmtree(ROOT, ignore_errors=True)


def _ensure_gallery(app: object) -> None:
    """The fuzzer may delete or empty the gallery: make it again, with two people."""
    galleries = app.state.galleries  # type: ignore[attr-defined]
    if GALLERY not in galleries.names():
        galleries.create(GALLERY)
    index = galleries.get(GALLERY)
    if len(index.labels()) < 2:
        vectors = galleries.encoder.embed([Image.open(io.BytesIO(_png(n))) for n in range(3)])
        galleries.enrol(GALLERY, "ann", list(vectors[:2]))
        galleries.enrol(GALLERY, "bob", list(vectors[2:]))


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))  # fmt: skip
def test_every_answer_follows_the_schema(case: object) -> None:
    _ensure_gallery(APP)
    path_parameters = case.path_parameters  # type: ignore[attr-defined]
    # Half the cases aim at the gallery that exists; such a request is no longer the one
    # generated, so a generated-invalid case is not judged on being rejected.
    aimed = bool(path_parameters) and "gallery" in path_parameters and _coin(path_parameters)
    if aimed:
        path_parameters["gallery"] = GALLERY
    response = case.call(headers=HEADERS)  # type: ignore[attr-defined]
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
        assert "Traceback" not in response.text
    # A schema cannot say "these bytes must be a JPEG": generated files are schema-valid
    # noise that the service rightly refuses (415, 422), so uploads skip that one check.
    uploads = case.media_type == "multipart/form-data"  # type: ignore[attr-defined]
    excluded = [positive_data_acceptance] if uploads else []
    excluded += [negative_data_rejection] if aimed else []
    case.validate_response(response, excluded_checks=excluded)  # type: ignore[attr-defined]
