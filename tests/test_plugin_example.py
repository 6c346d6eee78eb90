"""The example plugin package installs, is found by name, and trains from the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "examples" / "custom_encoder_plugin"


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin pip-installed into a folder of its own (the test venv stays clean)."""
    target = tmp_path_factory.mktemp("plugin-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--target", str(target), str(PLUGIN)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return target


def run(plugin_site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(plugin_site)}
    return subprocess.run(
        [sys.executable, "-m", "siamkit", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_installed_plugin_is_listed(plugin_site: Path) -> None:
    assert (plugin_site / "siamkit_tiny_plugin").is_dir()
    out = run(plugin_site, "list").stdout
    assert "tiny" in out.split("encoders:")[1].split("\n")[0]


def test_plugin_encoder_trains_from_the_cli(
    plugin_site: Path, synthetic_faces: Path, tmp_path: Path
) -> None:
    out = tmp_path / "tiny-model"
    proc = run(
        plugin_site, "train", "--data", str(synthetic_faces), "--out", str(out),
        "--encoder", "tiny", "--encoder-arg", "width=4", "--epochs", "2",
        "--batch-size", "12", "--m-per-class", "3", "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((out / "encoder.json").read_text())
    assert manifest["name"] == "tiny" and manifest["config"]["width"] == 4
    assert manifest["metric"] == "cosine"
    # and it loads back by name in a fresh process
    check = (
        f"import siamkit, numpy as np; e = siamkit.load_encoder(r'{out}'); "
        "print(type(e).__module__, e.embed(np.zeros((1, 1, 28, 23), 'float32')).shape)"
    )
    env = {**os.environ, "PYTHONPATH": str(plugin_site)}
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.stdout.split() == ["siamkit_tiny_plugin", "(1,", "32)"], done.stderr
