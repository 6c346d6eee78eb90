"""Pair miners against brute-force definitions, the PML adapter and the miner registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pytorch_metric_learning.miners import PairMarginMiner, TripletMarginMiner

from siamkit import ContrastiveLoss
from siamkit.exceptions import ConfigError, NonFiniteError, ShapeError, UnknownComponentError
from siamkit.geometry import METRICS
from siamkit.miners import (
    AllPairsMiner,
    BatchHardPairMiner,
    HardPairMiner,
    PairMiner,
    PMLPairMiner,
    RandomPairMiner,
    as_pair_miner,
    create_miner,
    list_miners,
    miner_registry,
    pair_masks,
    register_miner,
)


def _distance(a: np.ndarray, b: np.ndarray, metric: str) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    if metric == "euclidean":
        return float(np.sqrt(((a - b) ** 2).sum()))
    return float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _batch(seed: int, n: int = 14, dim: int = 5, classes: int = 4):
    rng = np.random.default_rng(seed)
    emb = torch.from_numpy(rng.normal(size=(n, dim)).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, classes, size=n))
    return emb, labels


def _as_lists(pairs) -> list[list[int]]:
    return [t.tolist() for t in pairs]


def _check_index_tensors(pairs) -> None:
    assert len(pairs) == 4
    for t in pairs:
        assert isinstance(t, torch.Tensor)
        assert t.dtype == torch.long
        assert t.ndim == 1


def _brute_all(labels: list[int]):
    a1, p, a2, n = [], [], [], []
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            if labels[i] == labels[j]:
                a1.append(i)
                p.append(j)
            else:
                a2.append(i)
                n.append(j)
    return [a1, p, a2, n]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_pairs_miner_brute_force(seed):
    emb, labels = _batch(seed)
    pairs = AllPairsMiner()(emb, labels)
    _check_index_tensors(pairs)
    assert _as_lists(pairs) == _brute_all(labels.tolist())
    n = len(labels)
    assert len(pairs[0]) + len(pairs[2]) == n * (n - 1) // 2


def test_pair_masks_upper_triangular():
    pos, neg = pair_masks(torch.tensor([0, 1, 0, 1]))
    assert pos.nonzero().tolist() == [[0, 2], [1, 3]]
    assert neg.nonzero().tolist() == [[0, 1], [0, 3], [1, 2], [2, 3]]
    assert not (pos & neg).any()
    assert not torch.diagonal(pos | neg).any()


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("seed", [0, 1])
def test_hard_miner_brute_force(metric, seed):
    emb, labels = _batch(seed, n=16)
    x, y = emb.numpy(), labels.tolist()
    n = len(y)
    dists = sorted(_distance(x[i], x[j], metric) for i in range(n) for j in range(i + 1, n))
    # margins half-way between two neighbouring distances: no pair sits on a margin
    k_pos, k_neg = len(dists) // 3, 2 * len(dists) // 3
    pos_margin = (dists[k_pos] + dists[k_pos + 1]) / 2
    neg_margin = (dists[k_neg] + dists[k_neg + 1]) / 2

    want = [[], [], [], []]
    for i in range(n):
        for j in range(i + 1, n):
            d = _distance(x[i], x[j], metric)
            if y[i] == y[j] and d > pos_margin:
                want[0].append(i)
                want[1].append(j)
            elif y[i] != y[j] and d < neg_margin:
                want[2].append(i)
                want[3].append(j)
    assert want[0] and want[2]

    miner = HardPairMiner(pos_margin=pos_margin, neg_margin=neg_margin, metric=metric)
    pairs = miner(emb, labels)
    _check_index_tensors(pairs)
    assert _as_lists(pairs) == want


def test_hard_miner_documented_example():
    emb = torch.tensor([[0.0], [2.0], [0.5]])
    pairs = HardPairMiner(pos_margin=1.0, neg_margin=1.0)(emb, torch.tensor([0, 0, 1]))
    # positive (0,1) at 2 > 1 ; negatives (0,2) at 0.5 < 1 kept, (1,2) at 1.5 dropped
    assert _as_lists(pairs) == [[0], [1], [0], [2]]


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_hard_miner_brute_force(metric, seed):
    emb, labels = _batch(seed, n=15, classes=5)
    labels[-1] = 99  # a singleton: it has no positive, so it is no anchor
    x, y = emb.numpy(), labels.tolist()
    n = len(y)
    want = [[], [], [], []]
    for i in range(n):
        positives = [j for j in range(n) if j != i and y[j] == y[i]]
        negatives = [j for j in range(n) if y[j] != y[i]]
        if not positives or not negatives:
            continue
        want[0].append(i)
        want[1].append(max(positives, key=lambda j: _distance(x[i], x[j], metric)))
        want[2].append(i)
        want[3].append(min(negatives, key=lambda j: _distance(x[i], x[j], metric)))
    pairs = BatchHardPairMiner(metric=metric)(emb, labels)
    _check_index_tensors(pairs)
    assert _as_lists(pairs) == want
    assert n - 1 not in pairs[0].tolist()


def test_batch_hard_documented_example_and_metric_matters():
    emb = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
    a1, p, a2, n = BatchHardPairMiner()(emb, torch.tensor([0, 0, 1, 1]))
    assert a1.tolist() == a2.tolist() == [0, 1, 2, 3]
    assert p.tolist() == [1, 0, 3, 2]
    assert n.tolist() == [2, 2, 1, 1]

    # Euclidean and cosine disagree on which negative is closest
    emb = torch.tensor([[1.0, 0.0], [2.0, 0.1], [10.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 2])
    _, _, _, n_euc = BatchHardPairMiner(metric="euclidean")(emb, labels)
    _, _, _, n_cos = BatchHardPairMiner(metric="cosine")(emb, labels)
    assert n_euc.tolist() == [3, 3]  # anchor 0: (0,1) at 1.41 < (10,1) at 9.06
    assert n_cos.tolist() == [2, 2]  # (10,1) is nearly parallel to both anchors


def test_batch_hard_without_any_anchor():
    pairs = BatchHardPairMiner()(torch.randn(3, 2), torch.tensor([0, 1, 2]))
    assert all(len(t) == 0 for t in pairs)
    pairs = BatchHardPairMiner()(torch.randn(3, 2), torch.tensor([5, 5, 5]))
    assert all(len(t) == 0 for t in pairs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_miner_is_balanced_subset_of_negatives(seed):
    emb, labels = _batch(seed, n=20)
    a1, p, a2, n = RandomPairMiner(seed=seed)(emb, labels)
    everything = _brute_all(labels.tolist())
    assert [a1.tolist(), p.tolist()] == everything[:2]  # every positive pair
    negatives = set(zip(everything[2], everything[3], strict=True))
    chosen = list(zip(a2.tolist(), n.tolist(), strict=True))
    assert len(chosen) == len(a1) > 0  # balanced 50/50
    assert len(set(chosen)) == len(chosen)  # no negative twice
    assert set(chosen) <= negatives


def test_random_miner_ratio_and_cap():
    labels = torch.arange(12) // 2  # 6 positive pairs, 60 negative pairs
    emb = torch.zeros(12, 2)
    _, _, a2, _ = RandomPairMiner(negatives_per_positive=2.5, seed=0)(emb, labels)
    assert len(a2) == 15
    _, _, a2, _ = RandomPairMiner(negatives_per_positive=100, seed=0)(emb, labels)
    assert len(a2) == 60  # capped at all negatives
    # no positive pair: still at least one negative
    a1, _, a2, _ = RandomPairMiner(seed=0)(torch.zeros(4, 2), torch.arange(4))
    assert len(a1) == 0 and len(a2) == 1
    with pytest.raises(ConfigError):
        RandomPairMiner(negatives_per_positive=0)


def test_random_miner_seeded_reproducible():
    emb, labels = _batch(5, n=30, classes=3)
    first = _as_lists(RandomPairMiner(seed=11)(emb, labels))
    again = _as_lists(RandomPairMiner(seed=11)(emb, labels))
    other = _as_lists(RandomPairMiner(seed=12)(emb, labels))
    assert first == again
    assert first[2:] != other[2:]
    # one generator: the next call draws a different sample
    miner = RandomPairMiner(seed=11)
    assert _as_lists(miner(emb, labels)) == first
    assert _as_lists(miner(emb, labels))[2:] != first[2:]


def test_random_miner_without_seed_follows_torch_global_seed():
    emb, labels = _batch(6, n=30, classes=3)
    torch.manual_seed(3)
    first = _as_lists(RandomPairMiner()(emb, labels))
    torch.manual_seed(3)
    assert _as_lists(RandomPairMiner()(emb, labels)) == first


def test_pml_adapter_returns_exactly_pml_output():
    emb, labels = _batch(7, n=16, classes=3)
    pml = PairMarginMiner(pos_margin=0.3, neg_margin=0.9)
    want = pml(emb, labels)
    got = PMLPairMiner(pml)(emb, labels)
    _check_index_tensors(got)
    assert len(got[0]) > 0 and len(got[2]) > 0
    for g, w in zip(got, want, strict=True):
        assert torch.equal(g, w.long())


def test_pml_adapter_composes_with_contrastive_loss():
    emb, labels = _batch(8, n=16, classes=3)
    emb.requires_grad_(True)
    pairs = PMLPairMiner(PairMarginMiner(pos_margin=0.0, neg_margin=10.0))(emb, labels)
    # these margins keep every ordered pair: both orders of each unordered pair
    counts = torch.bincount(labels)
    assert len(pairs[0]) == int((counts * (counts - 1)).sum())
    assert len(pairs[2]) == 16 * 15 - len(pairs[0])
    loss = ContrastiveLoss(margin=1.5)
    value = loss.batch(emb, labels, pairs)
    # both orders of every pair: the mean equals the all-pairs mean
    torch.testing.assert_close(value, loss.batch(emb, labels), rtol=1e-5, atol=1e-7)
    value.backward()
    assert torch.isfinite(emb.grad).all()


def test_as_pair_miner():
    assert as_pair_miner(None) is None
    mine = AllPairsMiner()
    assert as_pair_miner(mine) is mine
    wrapped = as_pair_miner(PairMarginMiner())
    assert isinstance(wrapped, PMLPairMiner)
    with pytest.raises(ConfigError):
        PMLPairMiner("not a miner")


def test_pml_triplet_miner_is_refused():
    emb, labels = _batch(9)
    with pytest.raises(ConfigError, match="triplet"):
        PMLPairMiner(TripletMarginMiner())(emb, labels)


@pytest.mark.parametrize(
    "miner", [AllPairsMiner(), RandomPairMiner(seed=0), HardPairMiner(), BatchHardPairMiner()]
)
def test_labels_of_wrong_length(miner):
    with pytest.raises(ShapeError, match="label"):
        miner(torch.zeros(5, 2), torch.tensor([0, 0, 1, 1]))
    with pytest.raises(ShapeError):
        miner(torch.zeros(4, 2), torch.tensor([[0, 0], [1, 1]]))
    with pytest.raises(ShapeError):
        miner(torch.zeros(4), torch.tensor([0, 0, 1, 1]))


@pytest.mark.parametrize("miner", [AllPairsMiner(), HardPairMiner(), BatchHardPairMiner()])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_embeddings(miner, bad):
    emb = torch.zeros(4, 2)
    emb[2, 1] = bad
    with pytest.raises(NonFiniteError):
        miner(emb, torch.tensor([0, 0, 1, 1]))


def test_miner_output_is_checked():
    class Broken(PairMiner):
        def __init__(self, result):
            super().__init__()
            self.result = result

        def mine(self, embeddings, labels):
            return self.result

    emb, labels = torch.zeros(3, 2), torch.tensor([0, 0, 1])
    t = torch.tensor
    with pytest.raises(ConfigError):
        Broken((t([0]), t([1])))(emb, labels)
    with pytest.raises(ShapeError):
        Broken((t([0, 1]), t([1]), t([0]), t([2])))(emb, labels)
    with pytest.raises(ShapeError, match="outside"):
        Broken((t([0]), t([3]), t([0]), t([2])))(emb, labels)
    with pytest.raises(ShapeError):
        Broken((t([-1]), t([1]), t([0]), t([2])))(emb, labels)
    _, _, a2, n = Broken(([0], [1], [[0, 1]], [[2, 2]]))(emb, labels)  # lists, flattened
    assert a2.tolist() == [0, 1] and n.dtype == torch.long


def test_miner_does_not_track_gradients():
    class Spy(PairMiner):
        def mine(self, embeddings, labels):
            self.grad_enabled = torch.is_grad_enabled()
            self.requires_grad = embeddings.requires_grad
            return AllPairsMiner().mine(embeddings, labels)

    spy = Spy()
    spy(torch.randn(4, 2, requires_grad=True), torch.tensor([0, 0, 1, 1]))
    assert spy.grad_enabled is False
    assert spy.requires_grad is False


def test_registry_names_and_create_miner():
    names = list_miners()
    assert {"all", "random", "hard", "batch-hard"} <= set(names)
    assert names == sorted(names)
    assert isinstance(create_miner("all"), AllPairsMiner)
    assert isinstance(create_miner("batch-hard", metric="cosine"), BatchHardPairMiner)
    hard = create_miner("hard", neg_margin=0.5, metric="Cosine")
    assert isinstance(hard, HardPairMiner)
    assert (hard.neg_margin, hard.pos_margin, hard.metric) == (0.5, 0.0, "cosine")
    assert hard.distance_metric == "cosine"
    assert HardPairMiner().distance_metric == "euclidean"
    random_miner = create_miner("random", negatives_per_positive=2, seed=3)
    assert isinstance(random_miner, RandomPairMiner)
    assert random_miner.negatives_per_positive == 2
    with pytest.raises(UnknownComponentError, match="batch-hard"):
        create_miner("hardest")
    with pytest.raises(ConfigError):
        create_miner("hard", metric="manhattan")


def test_register_custom_miner():
    @register_miner("test-first-pair")
    class FirstPair(PairMiner):
        def mine(self, embeddings, labels):
            t = torch.tensor([0])
            return t, t + 1, t, t + 2

    try:
        assert "test-first-pair" in list_miners()
        miner = create_miner("test-first-pair")
        assert _as_lists(miner(torch.zeros(3, 1), torch.tensor([0, 0, 1]))) == [[0], [1], [0], [2]]
        with pytest.raises(ConfigError, match="already registered"):
            register_miner("all")(FirstPair)
        with pytest.raises(ConfigError, match="subclass"):
            register_miner("test-not-a-miner")(dict)
    finally:
        miner_registry._classes.pop("test-first-pair", None)
    assert "test-first-pair" not in list_miners()


def test_random_miner_draws_per_epoch_whatever_came_before() -> None:
    from siamkit.miners import RandomPairMiner

    labels = torch.arange(40) % 8
    embeddings = torch.zeros(40, 2)
    unbroken = RandomPairMiner(seed=3)
    unbroken.set_epoch(0)
    unbroken(embeddings, labels)
    unbroken.set_epoch(1)
    expected = unbroken(embeddings, labels)
    resumed = RandomPairMiner(seed=3)  # a fresh process resuming at epoch 1
    resumed.set_epoch(1)
    got = resumed(embeddings, labels)
    assert all(torch.equal(a, b) for a, b in zip(got, expected, strict=True))
    resumed.set_epoch(2)
    assert not torch.equal(resumed(embeddings, labels)[3], got[3])
