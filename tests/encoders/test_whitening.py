"""Within-person whitening: its maths, and its fitting by the Trainer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import siamkit
from siamkit.encoders import Whitening
from siamkit.training import TrainConfig, Trainer


def within_class_covariance(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    residual = x.copy()
    for person in np.unique(labels):
        residual[labels == person] -= x[labels == person].mean(0)
    return residual.T @ residual / len(x)


def test_full_whitening_makes_within_person_spread_isotropic() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(40), 10)
    centres = rng.normal(size=(40, 6)) * 3
    spread = np.diag([2.0, 1.0, 0.5, 0.3, 0.2, 0.1])  # anisotropic within-person noise
    x = centres[labels] + rng.normal(size=(400, 6)) @ spread
    layer = Whitening(6, normalize=False, shrinkage=0.0)
    layer.fit(torch.tensor(x), labels)
    z = layer(torch.tensor(x, dtype=torch.float32)).numpy().astype(np.float64)
    np.testing.assert_allclose(within_class_covariance(z, labels), np.eye(6), atol=1e-4)
    np.testing.assert_allclose(z.mean(0), 0.0, atol=1e-4)


def test_shrinkage_and_identity_before_fitting() -> None:
    layer = Whitening(3, normalize=True, shrinkage=1.0)
    x = torch.tensor([[3.0, 4.0, 0.0], [0.0, 0.0, 2.0]])
    np.testing.assert_allclose(layer(x).numpy(), [[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]], rtol=1e-6)
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(5), 4)
    data = torch.tensor(rng.normal(size=(20, 3)))
    layer.fit(data, labels)
    normalised = torch.nn.functional.normalize(data, dim=1).numpy()
    values = np.linalg.eigvalsh(within_class_covariance(normalised, labels))
    expected = np.sort(1 / np.sqrt(values + values.mean()))
    assert np.allclose(
        np.sort(np.linalg.eigvalsh(layer.matrix.double().numpy())), expected, rtol=1e-5
    )
    out = layer(data.float())
    np.testing.assert_allclose(out.norm(dim=1).numpy(), 1.0, rtol=1e-5)
    layer.reset()
    assert not bool(layer.fitted) and torch.equal(layer.matrix, torch.eye(3))


def test_fit_errors() -> None:
    layer = Whitening(2)
    with pytest.raises(siamkit.ShapeError):
        layer.fit(torch.zeros(4, 3), [0, 0, 1, 1])
    with pytest.raises(siamkit.ShapeError):
        layer.fit(torch.zeros(4, 2), [0, 0, 1])
    with pytest.raises(siamkit.DataError, match="two people"):
        layer.fit(torch.randn(4, 2), [0, 0, 0, 0])


def test_trainer_fits_whitening_and_the_saved_model_keeps_it(
    synthetic_faces: Path, tmp_path: Path
) -> None:
    parts = siamkit.split_by_class(siamkit.FaceFolder(synthetic_faces), val=2, seed=0)
    config = TrainConfig(epochs=2, batch_size=12, m_per_class=3, warmup_epochs=1)
    torch.manual_seed(0)
    encoder = siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16)
    result = Trainer(encoder, config).fit(parts.train, parts.val, tmp_path / "run")
    assert bool(encoder.whitening.fitted)
    # the reported metrics are those of the whitened encoder, as saved
    metrics = Trainer(encoder, config).evaluate(parts.val)
    assert result.best["auc"] == pytest.approx(metrics["val_auc"])
    loaded = siamkit.load_encoder(tmp_path / "run")
    assert bool(loaded.whitening.fitted)
    paths = parts.val.dataset.paths[:6]
    np.testing.assert_array_equal(loaded.embed(paths), encoder.embed(paths))

    torch.manual_seed(0)
    plain = siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=16)
    off = TrainConfig(epochs=2, batch_size=12, m_per_class=3, warmup_epochs=1, whiten=False)
    Trainer(plain, off).fit(parts.train, parts.val)
    assert not bool(plain.whitening.fitted)
    # Training itself does not depend on whitening: same weights before the layer.
    for name, value in plain.state_dict().items():
        if not name.startswith("whitening."):
            torch.testing.assert_close(value, encoder.state_dict()[name])
