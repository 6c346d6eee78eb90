"""The web page at ``/`` in a real browser: Playwright driving Debian's chromium headless.

The flows a person runs: enter a key, make a gallery, enrol two people (one by
drag and drop), search for one of them and for a stranger, delete a person. The
server is uvicorn in this process on 127.0.0.1, stopped by the test.
"""

from __future__ import annotations

import base64
import io
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import siamkit

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)"
)
playwright_api = pytest.importorskip("playwright.sync_api", reason="the dev extra lacks playwright")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed")


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (56, 46, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, str]]:
    from siamkit.serve import KeyFile, create_app

    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    keys = KeyFile(tmp_path / "keys.json")
    secret = keys.add("admin", "admin").secret
    encoder = siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16)
    # Photos of one person here are the same picture (distance 0): any positive threshold
    # accepts them, and a random stranger lies far beyond 1e-3.
    app = create_app(encoder, tmp_path / "galleries", keys, threshold=1e-3)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.started, "the test server did not start within 30 s"
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/", secret
    finally:
        running.should_exit = True
        thread.join(timeout=30)
        sock.close()
        assert not thread.is_alive()


def _drop(page: object, selector: str, files: dict[str, bytes]) -> None:
    """Drop files on an element as a person dragging them from the desktop would."""
    encoded = {name: base64.b64encode(data).decode() for name, data in files.items()}
    page.evaluate(  # type: ignore[attr-defined]
        """([selector, files]) => {
            const transfer = new DataTransfer();
            for (const [name, data] of Object.entries(files)) {
                const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
                transfer.items.add(new File([bytes], name, { type: "image/png" }));
            }
            const zone = document.querySelector(selector);
            for (const type of ["dragover", "drop"]) {
                zone.dispatchEvent(new DragEvent(type, { dataTransfer: transfer, bubbles: true }));
            }
        }""",
        [selector, encoded],
    )


def _files(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_enrol_search_and_delete_in_chromium(server: tuple[str, str], tmp_path: Path) -> None:
    url, secret = server
    with playwright_api.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                # a webcam that shows a test pattern, allowed without asking
                "--use-fake-device-for-media-stream",
                "--use-fake-ui-for-media-stream",
            ],
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.on("dialog", lambda dialog: dialog.accept())  # "Delete bob?" -> yes
            page.goto(url)
            status = page.locator("#status")
            playwright_api.expect(status).to_contain_text("unauthorized")  # no key yet

            page.fill("#key", secret)
            page.click("#connect")
            playwright_api.expect(status).to_contain_text("connected: 0 galleries")
            page.fill("#new-gallery", "staff")
            page.click("#create-gallery")
            playwright_api.expect(status).to_contain_text("created the gallery staff")

            page.fill("#person", "ann")
            _drop(page, "#enrol-drop", {"ann1.png": _png(1), "ann2.png": _png(1)})
            playwright_api.expect(page.locator("#enrol-chosen")).to_have_text("2 photo(s) chosen")
            page.click("#enrol")
            playwright_api.expect(status).to_have_text("enrolled 2 face(s) of ann")
            page.fill("#person", "bob <b>")  # refused, and the message is text, never HTML
            page.set_input_files("#enrol-files", _files(tmp_path, "bob.png", _png(2)))
            page.click("#enrol")
            playwright_api.expect(status).to_contain_text("'bob <b>' is not a plain name")
            assert page.locator("#status b").count() == 0
            page.fill("#person", "bob")
            page.click("#enrol")
            playwright_api.expect(status).to_have_text("enrolled 1 face(s) of bob")
            rows = page.locator("#people tr")
            playwright_api.expect(rows).to_have_count(2)
            assert rows.nth(0).inner_text().split("\t")[:2] == ["ann", "2"]

            page.set_input_files("#search-file", _files(tmp_path, "q.png", _png(1)))
            result = page.locator("#result")
            playwright_api.expect(result.locator(".decision")).to_have_text("ann")
            assert "match" in (result.get_attribute("class") or "")
            assert "distance 0.0000" in result.inner_text()
            crop = result.locator("canvas")
            assert crop.evaluate("c => [c.width, c.height]") == [46, 56]  # no detector: whole
            assert page.locator("#results .candidate").count() == 3

            page.set_input_files("#search-file", _files(tmp_path, "s.png", _png(3)))
            playwright_api.expect(result.locator(".decision")).to_have_text("unknown")
            assert "unknown" in (result.get_attribute("class") or "")

            page.click("#people button[data-person='bob']")
            playwright_api.expect(status).to_have_text("deleted bob")
            playwright_api.expect(rows).to_have_count(1)

            page.click("#webcam")  # 127.0.0.1 is a secure context: the browser allows it
            page.wait_for_function("() => document.getElementById('video').videoWidth > 0")
            page.click("#snap")
            # the new result card: the frame is searched whole (the model has no detector)
            page.wait_for_function("() => document.querySelector('#result canvas').width"
                                   " === document.getElementById('video').videoWidth")  # fmt: skip
            playwright_api.expect(result.locator(".decision")).to_have_text("unknown")
            assert errors == []
        finally:
            browser.close()


def test_the_page_loads_nothing_from_elsewhere(server: tuple[str, str]) -> None:
    httpx = pytest.importorskip("httpx2", reason="the dev extra's HTTP client is not installed")
    url, _ = server
    with httpx.Client(base_url=url, timeout=10) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert "http" not in page.text.replace("http-equiv", "")  # no outside scripts or styles
        assert client.get("/page/app.js").headers["content-type"].startswith("text/javascript")
        missing = client.get("/page/../keys.json")
        assert missing.status_code == 404 and set(missing.json()) == {"error"}
        assert client.get("/page/index.html").status_code == 404
