"""The HTML report renders in a real headless browser (Debian's chromium), pictures and all."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import siamkit
from siamkit.evaluation import evaluate_encoder, write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def test_report_renders_in_chromium(synthetic_faces: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    encoder = siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16)
    result = evaluate_encoder(encoder, synthetic_faces, out_dir=tmp_path / "eval")
    report = write_report(result, tmp_path / "eval")
    profile = tmp_path / "profile"
    common = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}"]
    dom = subprocess.run(
        [*common, "--dump-dom", report.as_uri()], capture_output=True, text=True, timeout=120
    ).stdout
    assert "Verification (1:1)" in dom and "Olivetti Research Laboratory" in dom
    assert len(re.findall(r"<img ", dom)) == len(result.figures)
    shot = tmp_path / "report.png"
    subprocess.run(
        [*common, "--window-size=1200,3000", f"--screenshot={shot}", report.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.shape[:2] == (3000, 1200)
    # The embedded plots draw in colour (green and red pairs, blue curves): a report
    # whose images failed to load would be black text on white only.
    saturated = (pixels.max(-1) - pixels.min(-1)) > 80
    assert saturated.mean() > 0.002
