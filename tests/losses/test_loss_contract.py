"""The PairLoss contract, its registry, geometry binding and the PML loss adapter."""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning import distances, losses, reducers

import siamkit
from siamkit.exceptions import ConfigError, GeometryError, UnknownComponentError
from siamkit.losses import ContrastiveLoss, PairLoss, PMLLoss, create_loss, list_losses


class _Squared(PairLoss):
    """Only pair_losses: both forms must come from the base class."""

    def pair_losses(self, distances, same):
        return torch.where(same, distances**2, torch.relu(1.0 - distances))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(8, 5, generator=generator), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])


def test_the_contrastive_loss_is_a_registered_pair_loss() -> None:
    assert issubclass(ContrastiveLoss, PairLoss)
    assert {"contrastive", "pml"} <= set(list_losses()) == set(siamkit.list_losses())
    assert create_loss("contrastive", margin=3.0).margin == 3.0
    with pytest.raises(UnknownComponentError):
        create_loss("triplet-ish")
    with pytest.raises(ConfigError, match="margin"):
        ContrastiveLoss(margin="abc")  # type: ignore[arg-type]


def test_a_subclass_gets_both_forms_and_they_agree() -> None:
    embeddings, labels = _batch()
    loss = _Squared()
    pairs = siamkit.create_miner("all")(embeddings, labels)
    a1, p, a2, n = pairs
    e1 = torch.cat([embeddings[a1], embeddings[a2]])
    e2 = torch.cat([embeddings[p], embeddings[n]])
    same = torch.cat(
        [torch.ones(len(a1), dtype=torch.bool), torch.zeros(len(a2), dtype=torch.bool)]
    )
    d = torch.linalg.vector_norm(e1 - e2, dim=1)
    by_formula = torch.where(same, d**2, torch.relu(1 - d)).mean()
    torch.testing.assert_close(loss(e1, e2, same), by_formula)
    torch.testing.assert_close(loss.batch(embeddings, labels, pairs), by_formula)
    torch.testing.assert_close(loss.batch(embeddings, labels), by_formula)  # all pairs


def test_a_loss_without_pair_losses_says_what_to_implement() -> None:
    with pytest.raises(NotImplementedError, match="pair_losses"):
        PairLoss()(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([True]))


def test_binding_never_mutates_the_users_loss() -> None:
    loss = ContrastiveLoss(margin=2.0)
    bound = loss.bound_to("cosine")
    assert bound is not loss and bound.distance == "cosine" and bound.margin == 2.0
    assert loss.distance is None
    fixed = ContrastiveLoss(distance="euclidean")
    assert fixed.bound_to("euclidean") is fixed
    with pytest.raises(GeometryError, match="cosine"):
        fixed.bound_to("cosine")


def test_pml_pair_form_is_the_pml_loss_on_the_same_pairs() -> None:
    pml = losses.ContrastiveLoss(
        pos_margin=0.1,
        neg_margin=1.5,
        distance=distances.LpDistance(normalize_embeddings=False),
        reducer=reducers.MeanReducer(),
    )
    loss = PMLLoss(pml)
    assert loss.metric == "euclidean" and loss.margin == 1.5
    e1, e2 = torch.randn(6, 3), torch.randn(6, 3)
    same = torch.tensor([True, False, True, False, False, True])
    d = torch.linalg.vector_norm(e1 - e2, dim=1)
    # PML's contrastive loss with a mean reducer: the mean of relu(d - pos) over the
    # positive pairs plus the mean of relu(neg - d) over the negative ones.
    expected = torch.relu(d[same] - 0.1).mean() + torch.relu(1.5 - d[~same]).mean()
    torch.testing.assert_close(loss(e1, e2, same), expected)


def test_pml_batch_form_uses_the_mined_pairs() -> None:
    embeddings, labels = _batch()
    pml = losses.MultiSimilarityLoss()
    loss = PMLLoss(pml)
    pairs = siamkit.create_miner("hard", neg_margin=0.5)(embeddings, labels)
    torch.testing.assert_close(
        loss.batch(embeddings, labels, pairs), pml(embeddings, labels, indices_tuple=pairs)
    )
    torch.testing.assert_close(loss.batch(embeddings, labels), pml(embeddings, labels))


def test_pml_classification_losses_train_their_own_weights() -> None:
    loss = create_loss("pml", loss="ArcFaceLoss", num_classes=4, embedding_size=5)
    assert loss.is_classification and loss.metric == "cosine"
    assert sum(p.numel() for p in loss.parameters()) == 4 * 5
    embeddings, labels = _batch()
    value = loss.batch(embeddings.requires_grad_(), labels)
    value.backward()
    assert next(loss.parameters()).grad is not None
    with pytest.raises(ConfigError, match="classification"):
        loss(torch.zeros(2, 5), torch.zeros(2, 5), torch.tensor([True, False]))


def test_pml_geometry_and_bad_input() -> None:
    assert PMLLoss("CircleLoss").metric == "cosine"
    with pytest.raises(GeometryError, match="LpDistance"):
        PMLLoss(losses.ContrastiveLoss(distance=distances.LpDistance(p=1)))
    with pytest.raises(GeometryError):
        PMLLoss(losses.ContrastiveLoss()).bound_to("euclidean")  # normalised: cosine
    with pytest.raises(ConfigError, match="no loss named"):
        PMLLoss("NotALoss")
    with pytest.raises(ConfigError, match="cannot build"):
        PMLLoss("MultiSimilarityLoss", colour="red")
    with pytest.raises(ConfigError):
        PMLLoss(42)
