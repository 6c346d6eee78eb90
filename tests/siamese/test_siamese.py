"""The Siamese twin shares one encoder between both inputs."""

from __future__ import annotations

import pytest
import torch

import siamkit
from siamkit.geometry import paired_distances


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_twins_share_weights_and_measure_in_the_encoder_metric(metric: str) -> None:
    torch.manual_seed(0)
    encoder = siamkit.create_encoder("mlp", input_dim=6, embedding_dim=3, metric=metric).eval()
    net = siamkit.SiameseNetwork(encoder)
    x1, x2 = torch.randn(5, 6), torch.randn(5, 6)
    e1, e2 = net(x1, x2)
    torch.testing.assert_close(e1, encoder(x1))
    torch.testing.assert_close(e2, encoder(x2))
    expected = paired_distances(encoder(x1), encoder(x2), metric)
    torch.testing.assert_close(net.distance(x1, x2), expected)
    assert net.metric == metric
    # One set of parameters, not two.
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in encoder.parameters())


def test_gradients_from_both_sides_reach_the_shared_encoder() -> None:
    torch.manual_seed(0)
    encoder = siamkit.create_encoder("mlp", input_dim=4, embedding_dim=2, hidden=[])
    net = siamkit.SiameseNetwork(encoder)
    x1, x2 = torch.randn(3, 4), torch.randn(3, 4)
    net.distance(x1, torch.zeros(3, 4)).sum().backward()
    only_left = encoder.net[0].weight.grad.clone()
    encoder.zero_grad()
    net.distance(x1, x2).sum().backward()
    assert not torch.allclose(encoder.net[0].weight.grad, only_left)


def test_refuses_a_plain_module() -> None:
    with pytest.raises(siamkit.ConfigError, match=r"subclass siamkit\.Encoder"):
        siamkit.SiameseNetwork(torch.nn.Linear(2, 2))
