"""The Conv-4: its shapes, its preprocessing (as the runtime replays it), and a saved copy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import siamkit
from siamkit.encoders import Conv4
from siamkit.exceptions import ConfigError


def _page() -> Image.Image:
    """A 105x105 'character': black strokes on white, as Omniglot's PNGs."""
    pixels = np.full((105, 105), 255, dtype=np.uint8)
    pixels[20:85, 50:56] = 0
    pixels[48:54, 20:85] = 0
    return Image.fromarray(pixels)


def test_shapes_parameters_and_margin() -> None:
    model = Conv4()
    out = model(torch.rand(3, 1, 28, 28))
    assert out.shape == (3, 64) and model.embedding_dim == 64
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-6)  # on the unit sphere
    # 4 x (3x3 conv without bias + BatchNorm's weight and bias): 111,680 parameters.
    expected = 9 * 64 + 2 * 64 + 3 * (9 * 64 * 64 + 2 * 64)
    assert sum(p.numel() for p in model.parameters()) == expected
    assert model.metric == "euclidean" and model.default_margin == 0.7
    wide = Conv4(width=8, input_size=(64, 48))
    assert wide.embedding_dim == 8 * 4 * 3 and wide(torch.zeros(2, 1, 64, 48)).shape == (2, 96)
    with pytest.raises(ConfigError, match="too often for input_size"):
        Conv4(input_size=(28, 28), stages=5)
    with pytest.raises(ConfigError, match="width"):
        Conv4(width=0)


def test_strokes_become_one_on_blank_zero_and_the_runtime_agrees() -> None:
    page = _page()
    inverted = Conv4().transform(page)
    assert inverted.shape == (1, 28, 28) and inverted.dtype == torch.float32
    assert inverted[0, 0, 0].item() == 0.0 and inverted.max().item() > 0.9  # paper 0, ink ~1
    plain = Conv4(invert=False).transform(page)
    assert torch.allclose(plain, 1 - inverted, atol=1e-6)
    for model in (Conv4(), Conv4(invert=False)):
        replayed = model.preprocessing().apply(page)  # what an ONNX export's runtime computes
        assert np.array_equal(replayed, model.transform(page).numpy())


def test_a_saved_conv4_embeds_the_same(tmp_path) -> None:
    torch.manual_seed(0)
    model = Conv4(width=16, invert=False).eval()
    model.save(tmp_path / "m")
    loaded = siamkit.load_encoder(tmp_path / "m")
    assert isinstance(loaded, Conv4) and loaded.invert is False
    page = _page()
    np.testing.assert_array_equal(loaded.embed([page]), model.embed([page]))
