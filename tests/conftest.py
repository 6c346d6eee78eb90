"""Shared fixtures of the siamkit test suite.

* ``orl_root``: the real AT&T/ORL faces, skipping the test when they are absent;
* ``omniglot_root``: the real Omniglot characters (torchvision's layout), likewise;
* ``synthetic_faces``: a small, learnable ImageFolder of six "people";
* ``make_image_folder``: a factory writing such folders for bad-input tests;
* ``clean_encoder_registry``: undoes encoder registrations made by a test;
* ``server``: a file server on 127.0.0.1 for the downloaders (:class:`FakeServer`).

The suite never reaches the network: a session-wide guard refuses socket
connections to anything but the loopback interface.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
ORL_DIR = REPO_ROOT.parent / "shared/data/att_faces"
OMNIGLOT_DIR = REPO_ROOT.parent / "shared/data/omniglot"

SYNTHETIC_CLASSES = 6
SYNTHETIC_IMAGES_PER_CLASS = 6
FACE_SIZE = (46, 56)  # (width, height), PIL order

# Two CPU cores, shared with other work: keep torch from oversubscribing them.
torch.set_num_threads(2)


# -- no network ----------------------------------------------------------------------
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def _guarded(connect: Callable) -> Callable:
    def wrapper(self: socket.socket, address, *args, **kwargs):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = address[0] if isinstance(address, tuple) else address
            if host not in _LOOPBACK:
                raise RuntimeError(f"tests must not reach the network (tried {address!r})")
        return connect(self, address, *args, **kwargs)

    return wrapper


@pytest.fixture(scope="session", autouse=True)
def _no_network() -> Iterator[None]:
    """Refuse connections to anything but 127.0.0.1 / ::1 for the whole session."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _guarded(socket.socket.connect))
        mp.setattr(socket.socket, "connect_ex", _guarded(socket.socket.connect_ex))
        yield


# -- image folders -------------------------------------------------------------------
def write_face_folder(
    root: Path,
    classes: dict[str, int],
    size: tuple[int, int] = FACE_SIZE,
    mode: str = "L",
    seed: int = 0,
) -> Path:
    """Write ``root/<class>/<i>.png``: per class a fixed random smooth pattern, per
    image Gaussian noise and a random shift of up to 2 pixels. Seeded."""
    rng = np.random.default_rng(seed)
    width, height = size
    pad = 2
    for name, count in classes.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        coarse = rng.uniform(0, 255, size=(max(2, height // 6), max(2, width // 6)))
        base = np.asarray(
            Image.fromarray(coarse.astype(np.uint8), "L").resize(
                (width + 2 * pad, height + 2 * pad), Image.Resampling.BILINEAR
            ),
            dtype=np.float64,
        )
        for index in range(count):
            dy, dx = rng.integers(0, 2 * pad + 1, size=2)
            crop = base[dy : dy + height, dx : dx + width]
            pixels = np.clip(crop + rng.normal(0, 8, size=crop.shape), 0, 255).astype(np.uint8)
            image = Image.fromarray(pixels, "L")
            if mode != "L":
                image = image.convert(mode)
            image.save(folder / f"{index}.png")
    return root


@pytest.fixture(scope="session")
def orl_root() -> Path:
    """The AT&T/ORL faces folder (``s1``..``s40``); skips the test when it is missing."""
    if not ORL_DIR.is_dir():
        pytest.skip(f"the AT&T faces are not at {ORL_DIR}")
    return ORL_DIR


@pytest.fixture
def omniglot_root() -> Path:
    """The Omniglot copy (torchvision's layout and the 20 runs); skips the test when missing."""
    if not (OMNIGLOT_DIR / "omniglot-py").is_dir():
        pytest.skip(f"Omniglot is not at {OMNIGLOT_DIR}")
    return OMNIGLOT_DIR


@pytest.fixture(scope="session")
def synthetic_faces(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ImageFolder of 6 classes ``person0``..``person5`` × 6 greyscale 46×56 PNGs.

    Each class has its own pattern, so the classes are learnable (and separable
    even on raw pixels).
    """
    root = tmp_path_factory.mktemp("synthetic_faces")
    classes = {f"person{i}": SYNTHETIC_IMAGES_PER_CLASS for i in range(SYNTHETIC_CLASSES)}
    return write_face_folder(root, classes, seed=1234)


@pytest.fixture
def make_image_folder(tmp_path: Path) -> Callable[..., Path]:
    """``make_image_folder({"ann": 3, "bob": 0}, size=(46, 56), mode="L") -> Path``.

    Each call writes a new folder under ``tmp_path``; a count of 0 makes an empty
    class folder.
    """
    calls = 0

    def make(classes: dict[str, int], size: tuple[int, int] = FACE_SIZE, mode: str = "L") -> Path:
        nonlocal calls
        calls += 1
        root = tmp_path / f"image_folder_{calls}"
        root.mkdir()
        return write_face_folder(root, classes, size=size, mode=mode, seed=calls)

    return make


@pytest.fixture
def clean_encoder_registry() -> Iterator[None]:
    """Restore the encoder registry after the test: names registered (or plugins
    loaded) by it are forgotten, and plugin modules named ``siamkit_test_plugin*``
    are unloaded."""
    from siamkit.encoders import encoder_registry

    saved = dict(encoder_registry._classes)
    saved_loaded = encoder_registry._plugins_loaded
    modules = set(sys.modules)
    try:
        yield
    finally:
        encoder_registry._classes.clear()
        encoder_registry._classes.update(saved)
        encoder_registry._plugins_loaded = saved_loaded
        for name in set(sys.modules) - modules:
            if name.startswith("siamkit_test_plugin"):
                del sys.modules[name]


class FakeServer:
    """Serves ``routes`` (path -> bytes) on 127.0.0.1 and records every request."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}
        self.truncated: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                body = server.routes.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in server.truncated:
                    body = body[: len(body) // 2]  # the connection drops half-way
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def serve(self, path: str, body: bytes, truncated: bool = False) -> str:
        self.routes[path] = body
        if truncated:
            self.truncated.add(path)
        return self.url(path)

    def url(self, path: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServer]:
    for name in (
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    # should a test forget its url, the default must not be the internet either
    monkeypatch.setenv("SIAMKIT_ATT_URL", "http://127.0.0.1:9/no-default-download")
    fake = FakeServer()
    try:
        yield fake
    finally:
        fake.close()
