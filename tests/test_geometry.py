"""siamkit.geometry: the one definition of distance, checked against numpy formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from siamkit.exceptions import ConfigError, NonFiniteError, ShapeError
from siamkit.geometry import (
    METRICS,
    check_embeddings,
    check_metric,
    paired_distances,
    pairwise_distances,
    prepare,
)


def _np_paired(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    if metric == "euclidean":
        return np.sqrt(((a - b) ** 2).sum(1))
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return 1.0 - cos


def _np_pairwise(a: np.ndarray, b: np.ndarray, metric: str) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    if metric == "euclidean":
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 1.0 - an @ bn.T


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


@pytest.mark.parametrize("metric", METRICS)
def test_paired_distances_numpy_matches_formula(rng, metric):
    a = rng.normal(size=(20, 5)).astype(np.float32)
    b = rng.normal(size=(20, 5)).astype(np.float32)
    d = paired_distances(a, b, metric)
    assert isinstance(d, np.ndarray)
    assert d.dtype == np.float32
    assert d.shape == (20,)
    np.testing.assert_allclose(d, _np_paired(a, b, metric), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("metric", METRICS)
def test_paired_distances_torch_matches_formula(rng, metric):
    a = rng.normal(size=(20, 5)).astype(np.float32)
    b = rng.normal(size=(20, 5)).astype(np.float32)
    d = paired_distances(torch.from_numpy(a), torch.from_numpy(b), metric)
    assert isinstance(d, torch.Tensor)
    assert d.shape == (20,)
    np.testing.assert_allclose(d.numpy(), _np_paired(a, b, metric), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("metric", METRICS)
def test_pairwise_distances_numpy_matches_formula(rng, metric):
    a = rng.normal(size=(9, 4)).astype(np.float32)
    b = rng.normal(size=(6, 4)).astype(np.float32)
    d = pairwise_distances(a, b, metric)
    assert isinstance(d, np.ndarray)
    assert d.shape == (9, 6)
    np.testing.assert_allclose(d, _np_pairwise(a, b, metric), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("metric", METRICS)
def test_pairwise_distances_torch_matches_formula(rng, metric):
    a = rng.normal(size=(9, 4)).astype(np.float32)
    b = rng.normal(size=(6, 4)).astype(np.float32)
    d = pairwise_distances(torch.from_numpy(a), torch.from_numpy(b), metric)
    assert isinstance(d, torch.Tensor)
    np.testing.assert_allclose(d.numpy(), _np_pairwise(a, b, metric), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("metric", METRICS)
def test_pairwise_self_distances_symmetric_with_exact_zero_diagonal(rng, metric):
    a = (rng.normal(size=(10, 3)) * 50).astype(np.float32)  # large values: cancellation
    d = pairwise_distances(a, None, metric)
    assert d.shape == (10, 10)
    np.testing.assert_array_equal(np.diag(d), np.zeros(10, dtype=np.float32))
    np.testing.assert_allclose(d, d.T, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(d, _np_pairwise(a, a, metric), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("metric", METRICS)
def test_pairwise_agrees_with_paired(rng, metric):
    a = torch.from_numpy(rng.normal(size=(8, 6)).astype(np.float32))
    b = torch.from_numpy(rng.normal(size=(8, 6)).astype(np.float32))
    full = pairwise_distances(a, b, metric)
    torch.testing.assert_close(
        torch.diagonal(full), paired_distances(a, b, metric), atol=1e-5, rtol=1e-5
    )


def test_documented_values():
    a = np.array([[3.0, 0.0]], dtype=np.float32)
    b = np.array([[0.0, 4.0]], dtype=np.float32)
    assert paired_distances(a, b, "euclidean")[0] == pytest.approx(5.0)
    assert paired_distances(a, b, "cosine")[0] == pytest.approx(1.0)
    # opposite directions: cosine distance 2; same direction, any length: 0
    assert paired_distances(a, -2 * a, "cosine")[0] == pytest.approx(2.0)
    assert paired_distances(a, 7 * a, "cosine")[0] == pytest.approx(0.0, abs=1e-7)
    np.testing.assert_allclose(pairwise_distances(np.eye(2), None, "cosine"), [[0, 1], [1, 0]])


def test_identical_rows_have_near_zero_distance_and_finite_gradient():
    a = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    b = a.detach().clone().requires_grad_(True)
    d = paired_distances(a, b, "euclidean")
    assert d.item() == pytest.approx(0.0, abs=1e-5)
    d.sum().backward()
    assert torch.isfinite(a.grad).all()
    assert torch.isfinite(b.grad).all()


def test_metric_is_case_insensitive_and_checked():
    assert check_metric("Cosine") == "cosine"
    assert check_metric("EUCLIDEAN") == "euclidean"
    for bad in ("manhattan", "", "l2"):
        with pytest.raises(ConfigError, match="unknown metric"):
            check_metric(bad)
    a = np.ones((2, 2), dtype=np.float32)
    with pytest.raises(ConfigError):
        paired_distances(a, a, "dot")
    with pytest.raises(ConfigError):
        pairwise_distances(a, None, "dot")
    with pytest.raises(ConfigError):
        prepare(a, "dot")


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        check_metric("nope")


def test_shape_mismatch():
    with pytest.raises(ShapeError):
        paired_distances(np.ones((3, 2)), np.ones((2, 2)), "euclidean")
    with pytest.raises(ShapeError):
        pairwise_distances(np.ones((3, 2)), np.ones((3, 4)), "cosine")


def test_prepare_normalises_only_for_cosine(rng):
    x = (rng.normal(size=(6, 4)) * 3).astype(np.float32)
    same = prepare(x, "euclidean")
    np.testing.assert_array_equal(same, x)
    unit = prepare(x, "cosine")
    assert isinstance(unit, np.ndarray)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), np.ones(6), rtol=1e-6)
    np.testing.assert_allclose(unit, x / np.linalg.norm(x, axis=1, keepdims=True), rtol=1e-6)
    t = prepare(torch.from_numpy(x), "cosine")
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), unit, rtol=1e-6)
    np.testing.assert_allclose(prepare(np.array([[3.0, 4.0]], np.float32), "cosine"), [[0.6, 0.8]])


def test_prepare_zero_vector_stays_finite():
    out = prepare(np.zeros((1, 3), dtype=np.float32), "cosine")
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, np.zeros((1, 3), dtype=np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_embeddings_detects_non_finite(bad):
    x = np.ones((3, 2), dtype=np.float32)
    x[1, 0] = bad
    with pytest.raises(NonFiniteError, match="NaN or infinity"):
        check_embeddings(x)
    with pytest.raises(NonFiniteError):
        check_embeddings(torch.from_numpy(x))
    with pytest.raises(FloatingPointError):  # also the built-in type
        check_embeddings(x)


def test_check_embeddings_shapes():
    check_embeddings(np.zeros((2, 3)))
    check_embeddings(np.zeros((0, 3)))  # empty is fine
    with pytest.raises(ShapeError, match="2-D"):
        check_embeddings(np.zeros(3))
    with pytest.raises(ShapeError):
        check_embeddings(torch.zeros(2, 3, 4))


def test_the_single_query_helpers_give_the_general_functions_numbers() -> None:
    from siamkit import geometry
    from siamkit.geometry import index_distance_list, index_distances, prepare_query

    rng = np.random.default_rng(7)
    rows = geometry.prepare(rng.normal(size=(50, 16)).astype(np.float32), "cosine")
    # Near-opposite pairs, whose halved squared difference can round past 2.
    queries = np.concatenate([rows[:5], -rows[5:10], rng.normal(size=(5, 16)).astype(np.float32)])
    # Rows just inside and just outside prepare's unit tolerance (2**-22 on the square).
    for scale in (1 + 2.0**-24, 1 + 2.0**-22.5, 1 + 2.0**-21, 0.5):
        queries = np.concatenate([queries, (rows[:3] * np.float32(scale)).astype(np.float32)])
    for metric in ("cosine", "euclidean"):
        for query in queries:
            row = prepare_query(query, metric)
            assert np.array_equal(row, geometry.prepare(query[None], metric))
            listed = index_distance_list(rows, row, metric)
            assert listed == index_distances(rows, row, metric).tolist()
            assert max(listed) <= 2.0 or metric == "euclidean"
