"""A real ``siamkit serve``: answered enrolments survive ``kill -9``; one server per folder."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import siamkit

httpx = pytest.importorskip("httpx2", reason="the dev extra's HTTP client is not installed")
pytest.importorskip("uvicorn", reason="the serve extra is not installed")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (56, 46, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _start(model: Path, root: Path, port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "siamkit", "serve", "--model", str(model), "--index",
               str(root), "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_ready(process: subprocess.Popen, url: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # bounded: at most `seconds`, polled every 0.2 s
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.communicate()[1]}")
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise AssertionError("the server did not answer within the time allowed")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=30)


@pytest.mark.skipif(os.name != "posix", reason="kill -9 is POSIX")
def test_an_answered_enrolment_survives_kill_9(tmp_path: Path) -> None:
    model = tmp_path / "model"
    siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16).save(model)
    root, port = tmp_path / "galleries", _free_port()
    url = f"http://127.0.0.1:{port}"
    server = _start(model, root, port)
    try:
        _wait_ready(server, url)
        assert httpx.post(f"{url}/galleries", json={"name": "staff"}).status_code == 201
        files = [("files", ("a.png", _png(1), "image/png"))]
        answer = httpx.post(f"{url}/galleries/staff/people/ann/faces", files=files, timeout=60)
        assert answer.status_code == 201
        os.kill(server.pid, signal.SIGKILL)  # right after the answer
        server.communicate(timeout=30)
        second = _start(model, root, port)
        try:
            _wait_ready(second, url)
            info = httpx.get(f"{url}/galleries/staff").json()
            assert (info["faces"], info["people"]) == (1, 1)
            people = httpx.get(f"{url}/galleries/staff/people").json()["people"]
            assert people == [{"name": "ann", "faces": 1}]
            other = _start(model, root, _free_port())  # a second server on the same folder
            _, err = other.communicate(timeout=120)
            assert other.returncode == 2 and "another siamkit serve holds" in err, err
            assert err.count("\n") == 1  # one line, the CLI's
            assert "Traceback" not in err
        finally:
            _stop(second)
    finally:
        _stop(server)
