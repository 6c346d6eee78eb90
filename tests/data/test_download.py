"""The AT&T downloader, against fake archives served from 127.0.0.1 (never the internet)."""

from __future__ import annotations

import io
import socket
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest

from siamkit.data import ATTFaces, check_att_archive, download_att_faces, find_att_folder
from siamkit.exceptions import DataError, DownloadError

PGM_SIZE = (3, 2)  # width, height: tiny but real greyscale images


def _pgm(person: int, image: int) -> bytes:
    width, height = PGM_SIZE
    pixels = bytes((person * 10 + image + k) % 256 for k in range(width * height))
    return f"P5\n{width} {height}\n255\n".encode() + pixels


def make_archive(
    prefix: str = "",
    people: int = 40,
    images: int = 10,
    extra: dict[str, bytes] | None = None,
    symlink: str | None = None,
) -> bytes:
    """A zip with ``{prefix}s{p}/{i}.pgm`` for p in 1..people, i in 1..images."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        if prefix:
            zf.writestr(f"{prefix}README", "fake AT&T faces for tests\n")
        for p in range(1, people + 1):
            for i in range(1, images + 1):
                zf.writestr(f"{prefix}s{p}/{i}.pgm", _pgm(p, i))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def good_archive() -> bytes:
    return make_archive()


def _files_outside(tmp_path: Path, root: Path) -> set[Path]:
    return {p for p in tmp_path.rglob("*") if root not in p.parents and p != root}


def _check_faces(faces: ATTFaces, root: Path) -> None:
    assert len(faces) == 400
    assert len(faces.classes) == 40
    assert faces.folder == root / "att_faces"
    index = faces.classes.index("s7") * 10 + sorted(range(1, 11), key=str).index(3)
    image, label = faces[index]
    assert faces.classes[label] == "s7"
    assert Path(faces.paths[index]).name == "3.pgm"
    assert (image.mode, image.size) == ("L", PGM_SIZE)
    np.testing.assert_array_equal(np.asarray(image).ravel(), list(_pgm(7, 3)[-6:]))


def test_download_extract_and_load(tmp_path, server, good_archive):
    url = server.serve("/att_faces.zip", good_archive)
    root = tmp_path / "data"
    faces = ATTFaces(root, download=True, url=url)
    _check_faces(faces, root)
    assert server.requests == ["/att_faces.zip"]
    assert (root / "att_faces.zip").read_bytes() == good_archive
    assert sorted(p.name for p in root.iterdir()) == ["att_faces", "att_faces.zip"]  # no leftovers


def test_nested_archive(tmp_path, server):
    url = server.serve("/nested.zip", make_archive(prefix="orl_faces/"))
    root = tmp_path / "data"
    faces = ATTFaces(root, download=True, url=url)
    _check_faces(faces, root)
    assert (root / "att_faces" / "s40" / "10.pgm").is_file()
    assert (root / "att_faces" / "README").is_file()
    assert not (root / "att_faces" / "orl_faces").exists()


def test_second_call_does_not_fetch_again(tmp_path, server, good_archive):
    url = server.serve("/att_faces.zip", good_archive)
    root = tmp_path / "data"
    ATTFaces(root, download=True, url=url)
    faces = ATTFaces(root, download=True, url=url)
    assert len(faces) == 400
    assert download_att_faces(root, url=url) == root / "att_faces"
    assert len(server.requests) == 1
    # the extracted folder gone, the valid archive is extracted again without a fetch
    import shutil

    shutil.rmtree(root / "att_faces")
    assert len(ATTFaces(root, download=True, url=url)) == 400
    assert len(server.requests) == 1
    # root may also be the folder holding s1..s40 itself
    assert len(ATTFaces(root / "att_faces")) == 400
    assert find_att_folder(root) == root / "att_faces"


def test_invalid_archive_on_disk_is_fetched_again(tmp_path, server, good_archive):
    url = server.serve("/att_faces.zip", good_archive)
    root = tmp_path / "data"
    root.mkdir()
    (root / "att_faces.zip").write_bytes(b"half a download")
    assert len(ATTFaces(root, download=True, url=url)) == 400
    assert len(server.requests) == 1


@pytest.mark.parametrize("evil", ["../evil.pgm", "s1/../../evil.pgm", "ABSOLUTE"])
def test_zip_slip_is_refused(tmp_path, server, evil):
    outside = tmp_path / "evil.pgm"
    if evil == "ABSOLUTE":
        evil = str(tmp_path / "absolute_evil.pgm")
        outside = tmp_path / "absolute_evil.pgm"
    url = server.serve("/evil.zip", make_archive(extra={evil: b"pwned"}))
    root = tmp_path / "data"
    before = _files_outside(tmp_path, root)
    with pytest.raises(DownloadError, match="refusing"):
        ATTFaces(root, download=True, url=url)
    assert not outside.exists()
    assert _files_outside(tmp_path, root) == before
    assert not (root / "att_faces").exists()
    assert [p.name for p in root.iterdir()] == ["att_faces.zip"]  # no staging folder left


def test_symlink_member_is_refused(tmp_path, server):
    url = server.serve("/link.zip", make_archive(symlink="s1/link"))
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="link"):
        ATTFaces(root, download=True, url=url)
    assert not (root / "att_faces").exists()


@pytest.mark.parametrize(
    ("people", "images"), [(39, 10), (40, 9), (0, 0)], ids=["39-people", "9-images", "empty"]
)
def test_wrong_structure_is_refused(tmp_path, server, people, images):
    url = server.serve("/wrong.zip", make_archive(people=people, images=images))
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="not the AT&T faces"):
        ATTFaces(root, download=True, url=url)
    assert not (root / "att_faces").exists()


def test_not_a_zip_is_refused(tmp_path, server):
    url = server.serve("/page.html", b"<html>moved</html>")
    with pytest.raises(DownloadError, match="not a valid zip"):
        download_att_faces(tmp_path / "data", url=url)
    with pytest.raises(DownloadError):
        check_att_archive(tmp_path / "data" / "att_faces.zip")


def test_truncated_download_is_refused_then_retried(tmp_path, server, good_archive):
    root = tmp_path / "data"
    broken = server.serve("/broken.zip", good_archive, truncated=True)
    with pytest.raises(DownloadError):
        ATTFaces(root, download=True, url=broken)
    assert not (root / "att_faces").exists()
    good = server.serve("/att_faces.zip", good_archive)
    assert len(ATTFaces(root, download=True, url=good)) == 400
    assert server.requests == ["/broken.zip", "/att_faces.zip"]


def test_http_404_leaves_no_partial_file(tmp_path, server):
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="404"):
        ATTFaces(root, download=True, url=server.url("/missing.zip"))
    assert server.requests == ["/missing.zip"]
    assert list(root.iterdir()) == []  # neither the archive nor a .part file


def test_unreachable_server(tmp_path, server):
    with pytest.raises(DownloadError, match="could not download"):
        download_att_faces(tmp_path / "data", url="http://127.0.0.1:9/att_faces.zip")
    assert list((tmp_path / "data").iterdir()) == []


def test_file_url(tmp_path, good_archive):
    source = tmp_path / "mirror" / "att_faces.zip"
    source.parent.mkdir()
    source.write_bytes(good_archive)
    root = tmp_path / "data"
    faces = ATTFaces(root, download=True, url=source.as_uri())
    _check_faces(faces, root)


def test_url_from_environment(tmp_path, server, good_archive, monkeypatch):
    monkeypatch.setenv("SIAMKIT_ATT_URL", server.serve("/env.zip", good_archive))
    assert len(ATTFaces(tmp_path / "data", download=True)) == 400
    assert server.requests == ["/env.zip"]


def test_missing_dataset_without_download(tmp_path, server):
    root = tmp_path / "data"
    with pytest.raises(DataError, match="download=True"):
        ATTFaces(root)
    assert not root.exists()
    assert server.requests == []


def test_existing_incomplete_target_is_not_overwritten(tmp_path, server, good_archive):
    url = server.serve("/att_faces.zip", good_archive)
    root = tmp_path / "data"
    (root / "att_faces" / "s1").mkdir(parents=True)
    (root / "att_faces" / "mine.txt").write_text("keep me")
    with pytest.raises(DownloadError, match="remove it"):
        ATTFaces(root, download=True, url=url)
    assert (root / "att_faces" / "mine.txt").read_text() == "keep me"


def test_check_att_archive_returns_members(tmp_path, good_archive):
    path = tmp_path / "a.zip"
    path.write_bytes(good_archive)
    members = check_att_archive(path)
    assert len(members) == 400
    assert {m.filename for m in members} >= {"s1/1.pgm", "s40/10.pgm"}


def test_suite_cannot_reach_the_network():
    # conftest refuses connections beyond the loopback interface, before any packet
    with pytest.raises(RuntimeError, match="network"):
        socket.create_connection(("192.0.2.1", 80), timeout=0.5)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(RuntimeError, match="network"):
            sock.connect_ex(("198.51.100.7", 443))
    finally:
        sock.close()
