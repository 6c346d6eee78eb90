"""ContrastiveLoss: the Hadsell-Chopra-LeCun formula, in pair and batch form."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from siamkit import ContrastiveLoss
from siamkit.exceptions import ConfigError, NonFiniteError, ShapeError
from siamkit.geometry import METRICS
from siamkit.miners import AllPairsMiner, HardPairMiner, RandomPairMiner, all_pairs


def _np_distance(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    if metric == "euclidean":
        return np.sqrt(((a - b) ** 2).sum(1))
    return 1.0 - (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def _np_loss(d: np.ndarray, same: np.ndarray, margin: float) -> float:
    y = (~same).astype(np.float64)  # Y = 1 for a dissimilar pair
    per_pair = (1 - y) * 0.5 * d**2 + y * 0.5 * np.maximum(0.0, margin - d) ** 2
    return float(per_pair.mean())


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("margin", [0.5, 1.0, 2.5])
def test_pair_form_matches_formula(metric, margin):
    rng = np.random.default_rng(int(margin * 10) + len(metric))
    e1 = rng.normal(size=(32, 6)).astype(np.float32)
    e2 = rng.normal(size=(32, 6)).astype(np.float32)
    same = rng.random(32) < 0.5
    assert same.any() and (~same).any()
    loss = ContrastiveLoss(margin=margin, distance=metric)
    got = loss(torch.from_numpy(e1), torch.from_numpy(e2), torch.from_numpy(same)).item()
    want = _np_loss(_np_distance(e1, e2, metric), same, margin)
    assert got == pytest.approx(want, rel=1e-5, abs=1e-7)


def test_hand_computed_euclidean():
    loss = ContrastiveLoss(margin=2.0)
    e1 = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    e2 = torch.tensor([[3.0, 4.0], [1.0, 0.0], [0.0, 3.0]])
    # same at D=5: 12.5; different at D=1: 0.5*(2-1)^2 = 0.5; different at D=3: 0
    value = loss(e1, e2, torch.tensor([True, False, False])).item()
    assert value == pytest.approx((12.5 + 0.5 + 0.0) / 3)


def test_hand_computed_cosine():
    loss = ContrastiveLoss(margin=1.5, distance="cosine")
    e1 = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    e2 = torch.tensor([[0.0, 2.0], [-3.0, 0.0]])
    # D = 1 - cos: orthogonal 1.0 ; opposite 2.0
    # same at D=1: 0.5 ; different at D=1: 0.5*(0.5)^2 = 0.125 ; different at D=2: 0
    assert loss(e1, e2, torch.tensor([True, False])).item() == pytest.approx((0.5 + 0.0) / 2)
    assert loss(e1, e2, torch.tensor([False, True])).item() == pytest.approx((0.125 + 2.0) / 2)


def test_same_accepts_lists_and_ints():
    loss = ContrastiveLoss(margin=2.0)
    e1 = torch.zeros(2, 2)
    e2 = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    assert loss(e1, e2, [1, 0]).item() == pytest.approx(6.5)
    assert loss(e1, e2, [True, False]).item() == pytest.approx(6.5)


def test_metric_defaults_to_euclidean():
    assert ContrastiveLoss().metric == "euclidean"
    assert ContrastiveLoss(distance="Cosine").metric == "cosine"
    assert ContrastiveLoss().margin == 1.0


@pytest.mark.parametrize("metric", METRICS)
def test_batch_form_equals_pair_form_on_all_pairs(metric):
    rng = np.random.default_rng(3)
    emb = torch.from_numpy(rng.normal(size=(12, 5)).astype(np.float32))
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4])
    loss = ContrastiveLoss(margin=1.3, distance=metric)
    batch_value = loss.batch(emb, labels)

    first, second, flags = [], [], []
    for i in range(12):
        for j in range(i + 1, 12):
            first.append(i)
            second.append(j)
            flags.append(bool(labels[i] == labels[j]))
    pair_value = loss(emb[first], emb[second], torch.tensor(flags))
    torch.testing.assert_close(batch_value, pair_value, rtol=1e-6, atol=1e-7)
    assert len(flags) == 66 and sum(flags) == 3 + 1 + 6 + 1


@pytest.mark.parametrize("metric", METRICS)
def test_batch_form_with_mined_pairs(metric):
    rng = np.random.default_rng(4)
    emb = torch.from_numpy(rng.normal(size=(16, 4)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, 4, size=16))
    margin = 1.0 if metric == "cosine" else 2.0
    loss = ContrastiveLoss(margin=margin, distance=metric)
    miner = HardPairMiner(pos_margin=0.2, neg_margin=margin, metric=metric)
    a1, p, a2, n = miner(emb, labels)
    assert len(a1) > 0 and len(a2) > 0
    # hard pairs only: fewer than all pairs
    assert len(a1) + len(a2) < 16 * 15 // 2

    value = loss.batch(emb, labels, (a1, p, a2, n)).item()
    d_pos = _np_distance(emb[a1].numpy(), emb[p].numpy(), metric)
    d_neg = _np_distance(emb[a2].numpy(), emb[n].numpy(), metric)
    want = _np_loss(
        np.r_[d_pos, d_neg], np.r_[np.ones(len(a1), bool), np.zeros(len(a2), bool)], margin
    )
    assert value == pytest.approx(want, rel=1e-5)


def test_batch_form_with_all_pairs_miner_equals_default():
    rng = np.random.default_rng(5)
    emb = torch.from_numpy(rng.normal(size=(10, 3)).astype(np.float32))
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3])
    loss = ContrastiveLoss(margin=1.0)
    torch.testing.assert_close(
        loss.batch(emb, labels, AllPairsMiner()(emb, labels)), loss.batch(emb, labels)
    )
    torch.testing.assert_close(loss.batch(emb, labels, all_pairs(labels)), loss.batch(emb, labels))


def test_batch_documented_value():
    emb = torch.tensor([[0.0], [1.0], [3.0]])
    # pos (0,1) D=1: 0.5 ; neg (0,2) D=3: 0 ; neg (1,2) D=2: 0 -> 0.5/3
    assert ContrastiveLoss(margin=1.0).batch(emb, torch.tensor([0, 0, 1])).item() == pytest.approx(
        1 / 6
    )


def test_batch_accepts_numpy_pairs_and_labels():
    emb = torch.tensor([[0.0], [1.0], [3.0]])
    pairs = (np.array([0]), np.array([1]), np.array([1]), np.array([2]))
    # pos D=1: 0.5 ; neg D=2 with margin 3: 0.5*(1)^2 = 0.5
    assert ContrastiveLoss(margin=3.0).batch(
        emb, np.array([0, 0, 1]), pairs
    ).item() == pytest.approx(0.5)


def test_no_pairs_gives_zero_with_gradient():
    emb = torch.randn(4, 3, requires_grad=True)
    labels = torch.tensor([0, 1, 2, 3])
    empty = torch.zeros(0, dtype=torch.long)
    value = ContrastiveLoss().batch(emb, labels, (empty, empty, empty, empty))
    assert value.item() == 0.0
    assert value.requires_grad
    value.backward()
    assert emb.grad is not None
    torch.testing.assert_close(emb.grad, torch.zeros(4, 3))


def test_no_pairs_from_a_miner_gives_zero():
    emb = torch.tensor([[0.0], [5.0], [10.0]], requires_grad=True)
    labels = torch.tensor([0, 1, 2])
    pairs = HardPairMiner(neg_margin=1.0)(emb, labels)  # all negatives farther than 1
    assert all(len(t) == 0 for t in pairs)
    value = ContrastiveLoss().batch(emb, labels, pairs)
    assert value.item() == 0.0
    value.backward()
    assert torch.equal(emb.grad, torch.zeros(3, 1))


def test_single_item_batch_has_no_pair():
    emb = torch.randn(1, 3, requires_grad=True)
    value = ContrastiveLoss().batch(emb, torch.tensor([0]))
    assert value.item() == 0.0
    value.backward()
    assert torch.equal(emb.grad, torch.zeros(1, 3))


@pytest.mark.parametrize("same", [True, False])
def test_gradient_finite_for_identical_embeddings(same):
    e = torch.tensor([[0.3, -1.2, 2.0]], requires_grad=True)
    e1 = e
    e2 = e.detach().clone().requires_grad_(True)
    value = ContrastiveLoss(margin=1.0)(e1, e2, torch.tensor([same]))
    want = 0.0 if same else 0.5
    assert value.item() == pytest.approx(want, abs=1e-5)  # D = sqrt(eps) = 1e-6
    value.backward()
    assert torch.isfinite(e.grad).all()
    assert torch.isfinite(e2.grad).all()


def test_gradient_finite_for_duplicate_rows_in_batch():
    base = torch.tensor([[1.0, 2.0], [1.0, 2.0], [4.0, 0.0]])
    emb = base.clone().requires_grad_(True)
    value = ContrastiveLoss(margin=1.0).batch(emb, torch.tensor([0, 0, 1]))
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(emb.grad).all()


def test_gradient_pulls_positives_together_and_pushes_negatives_apart():
    e1 = torch.tensor([[0.0, 0.0], [0.0, 0.0]], requires_grad=True)
    e2 = torch.tensor([[1.0, 0.0], [0.5, 0.0]], requires_grad=True)
    value = ContrastiveLoss(margin=1.0)(e1, e2, torch.tensor([True, False]))
    value.backward()
    # positive (D=1): gradient on e2 = D * dD/de2 / N = +0.5 along x: a step against it pulls
    assert e2.grad[0, 0].item() == pytest.approx(0.5)
    # negative (D=0.5 < m): gradient = -(m - D) * dD/de2 / N = -0.25: a step pushes away
    assert e2.grad[1, 0].item() == pytest.approx(-0.25)


@pytest.mark.parametrize(
    ("s1", "s2", "n_same"),
    [((3, 2), (2, 2), 3), ((3, 2), (3, 3), 3), ((3,), (3,), 3), ((3, 2), (3, 2), 2)],
)
def test_pair_form_bad_shapes(s1, s2, n_same):
    with pytest.raises(ShapeError):
        ContrastiveLoss()(torch.zeros(s1), torch.zeros(s2), torch.ones(n_same, dtype=torch.bool))


def test_batch_form_bad_shapes():
    loss = ContrastiveLoss()
    with pytest.raises(ShapeError):
        loss.batch(torch.zeros(4, 2), torch.tensor([0, 0, 1]))
    with pytest.raises(ShapeError):
        loss.batch(torch.zeros(4), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ShapeError):
        loss.batch(torch.zeros(4, 2), torch.tensor([[0, 0], [1, 1]]))


def test_nan_embeddings_raise():
    loss = ContrastiveLoss()
    bad = torch.tensor([[0.0, float("nan")], [1.0, 1.0]])
    good = torch.ones(2, 2)
    with pytest.raises(NonFiniteError):
        loss(bad, good, torch.tensor([True, False]))
    with pytest.raises(NonFiniteError):
        loss(good, bad, torch.tensor([True, False]))
    with pytest.raises(NonFiniteError):
        loss.batch(torch.tensor([[0.0], [float("inf")]]), torch.tensor([0, 1]))


@pytest.mark.parametrize("margin", [0, 0.0, -1.0, float("nan")])
def test_non_positive_margin_is_a_config_error(margin):
    with pytest.raises(ConfigError, match="margin"):
        ContrastiveLoss(margin=margin)


def test_unknown_distance_is_a_config_error():
    with pytest.raises(ConfigError):
        ContrastiveLoss(distance="manhattan")


def test_random_miner_pairs_feed_the_loss():
    rng = np.random.default_rng(6)
    emb = torch.from_numpy(rng.normal(size=(12, 3)).astype(np.float32)).requires_grad_(True)
    labels = torch.arange(12) // 3
    pairs = RandomPairMiner(seed=1)(emb, labels)
    assert len(pairs[0]) == len(pairs[2]) == 4 * 3
    value = ContrastiveLoss(margin=2.0).batch(emb, labels, pairs)
    value.backward()
    assert value.item() > 0
    assert torch.isfinite(emb.grad).all() and emb.grad.abs().sum() > 0
