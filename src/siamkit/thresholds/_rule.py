"""The one rule siamkit uses to place a threshold for a target error rate.

A distance is accepted (a match, "same person") when it is **at most** the
threshold, so every distance tied with the threshold is accepted with it.

To allow at most a share ``target`` of the *negatives* (impostor pairs in 1:1,
searches by strangers in 1:N) through, let ``k`` be the largest count with
``k / n <= target`` and ``c`` the ``(k + 1)``-th smallest negative distance:
accepting ``c`` would exceed the target, and negatives tied at ``c`` are
rejected together (half a tie cannot be accepted). Every threshold in
``[lo, c)`` gives the same rates on the measured distances, where ``lo`` is
the largest observed distance (negative or positive) below ``c``. The
threshold is the middle of that gap, ``(lo + c) / 2``: sitting on ``lo``
would reject fresh positives just past the last one measured, sitting just
below ``c`` would accept fresh negatives just short of the first one rejected.

Fallback, when nothing reaches the target: with no observed distance below
``c``, ``lo`` is 0 (distances are never negative). If ``c`` is 0 itself (a
negative at distance 0, e.g. one image filed under two people), no threshold
can reject it: the threshold is 0, and the rate reached, reported with every
fit, shows the target was missed.

Every fit says whether it can be trusted (``reliable``): at least
``10 / target`` negatives back it (fewer cannot measure the rate), the target
was reached, and some positive is matched. Its ``warnings`` name what is
wrong otherwise (:func:`fit_warnings`): negatives at distance 0, a threshold
that separates nothing, positives tied with the negatives it rejects, and for
a face index's own gallery labels that look like one person.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from siamkit.exceptions import ConfigError, DataError, ShapeError

#: Below ``RELIABLE_COUNT / target`` negatives a fitted rate rests on fewer than
#: ten errors, and the fit is flagged unreliable.
RELIABLE_COUNT = 10


def accepts(distances: Any, threshold: float) -> Any:
    """The acceptance rule: True where a distance is at most the threshold.

    Every decision in siamkit goes through it: fitting a threshold, the face
    index's ``verify`` and ``identify``, and evaluation.

    Examples:
        >>> accepts(np.array([0.2, 0.5, 0.7]), 0.5).tolist()
        [True, True, False]
        >>> accepts(0.5, 0.5)
        True
    """
    return distances <= threshold


def check_rate(value: Any, name: str = "target_far") -> float:
    """``value`` as a float if it is a rate strictly between 0 and 1.

    Raises:
        ConfigError: naming ``name`` and an example of a valid rate.

    Examples:
        >>> check_rate(0.01, "target_fpir")
        0.01
        >>> check_rate(1.5, "target_fpir")
        Traceback (most recent call last):
        ...
        siamkit.exceptions.ConfigError: target_fpir must be between 0 and 1 ...
    """
    number = isinstance(value, (int, float, np.integer, np.floating))
    if isinstance(value, bool) or not number or not 0.0 < float(value) < 1.0:
        raise ConfigError(f"{name} must be between 0 and 1 (exclusive, e.g. 0.01), got {value!r}")
    return float(value)


def check_threshold(threshold: Any) -> float:
    """``threshold`` as a float if it is a usable distance: a finite number, not negative.

    Examples:
        >>> check_threshold(0.5)
        0.5
        >>> check_threshold("abc")
        Traceback (most recent call last):
        ...
        siamkit.exceptions.ConfigError: threshold must be a finite, non-negative distance ...
    """
    number = isinstance(threshold, (int, float, np.integer, np.floating))
    if isinstance(threshold, bool) or not number or not 0.0 <= float(threshold) < math.inf:
        raise ConfigError(
            f"threshold must be a finite, non-negative distance (e.g. 0.5), got {threshold!r}; "
            "calibrate the index to get one"
        )
    return float(threshold)


def check_scores(distances: Any, same: Any) -> tuple[np.ndarray, np.ndarray]:
    """Distances and same-person flags as flat arrays, with both kinds of pair present.

    Raises:
        ShapeError: the two differ in length.
        DataError: a distance is NaN or infinite, or all pairs are of one kind.

    Examples:
        >>> d, s = check_scores([0.1, 0.9], [1, 0])
        >>> d.tolist(), s.tolist()
        ([0.1, 0.9], [True, False])
    """
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    s = np.asarray(same, dtype=bool).reshape(-1)
    if d.shape != s.shape:
        raise ShapeError(f"{d.size} distances but {s.size} same/different flags")
    if not np.isfinite(d).all():
        raise DataError("distances contain NaN or infinity")
    if s.all() or not s.any():
        raise DataError("need both genuine (same) and impostor (different) pairs to evaluate")
    return d, s


def allowed_count(target: float, total: int) -> int:
    """The largest count ``k`` of ``total`` negatives with ``k / total <= target``.

    Examples:
        >>> allowed_count(0.29, 100), allowed_count(0.001, 500)
        (29, 0)
    """
    k = math.floor(target * total)
    while k + 1 <= total and (k + 1) / total <= target:  # floor may round a hair low
        k += 1
    while k > 0 and k / total > target:
        k -= 1
    return k


def threshold_at_rate(negatives: Any, target: float, candidates: Any = ()) -> float:
    """The threshold accepting at most ``target`` of ``negatives`` (the module's rule).

    Args:
        negatives: Distances that should be rejected (impostor or non-mated).
        target: The share of them that may be accepted, in (0, 1).
        candidates: The other observed distances (genuine or mated), which
            bound the gap the threshold sits in.

    Raises:
        DataError: no negative distance, or a distance that is NaN or infinite.

    Examples:
        >>> threshold_at_rate([0.3, 0.6, 0.7], 0.34, candidates=[0.1, 0.4])  # one may pass
        0.5
        >>> threshold_at_rate([0.3, 0.6, 0.7], 0.1, candidates=[0.1, 0.2])  # none may
        0.25
        >>> threshold_at_rate([0.0, 0.6], 0.1)  # nothing reaches the target
        0.0
    """
    neg = np.sort(np.asarray(negatives, dtype=np.float64).reshape(-1))
    if neg.size == 0:
        raise DataError("no negative distance (impostor or unknown probe) to fit a threshold on")
    cand = np.asarray(candidates, dtype=np.float64).reshape(-1)
    if not (np.isfinite(neg).all() and np.isfinite(cand).all()):
        raise DataError("distances contain NaN or infinity")
    ceiling = float(neg[allowed_count(target, neg.size)])
    below = np.concatenate([neg[neg < ceiling], cand[cand < ceiling]])
    low = max(0.0, float(below.max())) if below.size else 0.0
    middle = (low + ceiling) / 2
    return middle if middle < ceiling else low  # two adjacent floats have no middle


# What the warnings of a 1:1 and a 1:N fit call their distances.
_WORDS = {
    "1:1": ("impostor pairs", "genuine pairs", "FAR", "accepts"),
    "1:N": ("searches by strangers", "searches by enrolled people", "FPIR", "matches"),
}


def fit_warnings(
    negatives: Any,
    positives: Any,
    matched: Any,
    threshold: float,
    target: float,
    kind: str = "1:1",
) -> tuple[str, ...]:
    """What makes a threshold fitted by the rule untrustworthy, however many negatives back it.

    Measured with :func:`accepts`, the rule a face index decides by (a
    distance tied with the threshold is accepted):

    * **target missed**: negatives at distance 0 (identical embeddings under
      two labels: one person filed under two names, one image enrolled
      twice) are accepted by every threshold, so the rate reached exceeds
      the target;
    * **nothing separated**: no positive is matched (accepted, and in 1:N
      found as its own person): the threshold tells no one apart;
    * **ties**: positives at exactly the distance of the first negative the
      target rejects go out with it, as equal distances cannot be split.

    The first two make a fit unreliable (:func:`fit_reliable`).

    Args:
        negatives: Distances to reject (impostor pairs, strangers' searches).
        positives: Distances to accept (genuine pairs, enrolled people's searches).
        matched: Per positive, whether the decision at ``threshold`` is right.
        threshold: The fitted threshold.
        target: The rate asked for.
        kind: ``"1:1"`` or ``"1:N"``, for the wording.

    Examples:
        >>> fit_warnings([0.5, 0.6], [0.1, 0.2], [True, True], 0.35, 0.1)
        ()
        >>> [w[:46] for w in fit_warnings([0.0, 0.0, 0.6], [0.0], [True], 0.0, 0.1)]
        ['2 of the 3 impostor pairs are at distance 0 (i']
    """
    words = _WORDS[kind]
    neg = np.asarray(negatives, dtype=np.float64).reshape(-1)
    pos = np.asarray(positives, dtype=np.float64).reshape(-1)
    found = np.asarray(matched, dtype=bool).reshape(-1)
    out = [_target_missed(neg, threshold, target, words)]
    if pos.size and not found.any():
        out.append(
            f"the threshold {words[3]} none of the {pos.size} {words[1]} (to their own "
            f"person): they are no nearer than the {words[0]} it must reject, so it tells no "
            "one apart"
        )
    out.append(_ties(neg, pos, threshold, target, words))
    return tuple(warning for warning in out if warning)


def _target_missed(neg: np.ndarray, threshold: float, target: float, words: Any) -> str:
    rate = float(accepts(neg, threshold).mean()) if neg.size else 0.0
    if rate <= target:
        return ""
    zeros = int((neg <= 0).sum())
    return (
        f"{zeros} of the {neg.size} {words[0]} are at distance 0 (identical embeddings "
        "under two labels: one person filed under two names, or one image enrolled "
        f"twice?): no threshold rejects them, so the {words[2]} reached, {rate:.3g}, "
        f"misses the target {target:g}; merge or remove the duplicates, then calibrate "
        "again"
    )


def _ties(neg: np.ndarray, pos: np.ndarray, threshold: float, target: float, words: Any) -> str:
    if not neg.size:
        return ""
    ceiling = float(np.sort(neg)[allowed_count(target, neg.size)])
    tied = int((pos == ceiling).sum()) if ceiling > threshold else 0
    if not tied:
        return ""
    return (
        f"{tied} of the {words[1]} are at exactly the distance ({ceiling:.6g}) of "
        f"the nearest of the {words[0]} the target rejects: equal distances cannot "
        "be told apart, so they are rejected with it"
    )


def fit_reliable(
    num_negatives: int, target: float, rate: float, matched: Any, num_positives: int
) -> bool:
    """Whether a fit can be trusted: :func:`reliable`, the target reached, someone matched.

    A threshold that misses its target (negatives at distance 0) or separates
    nothing (no positive matched; see :func:`fit_warnings`) is never
    reliable, however many negatives it was measured on.

    Examples:
        >>> fit_reliable(2000, 0.01, 0.005, [True, False], 2)
        True
        >>> fit_reliable(2000, 0.01, 0.005, [False, False], 2)
        False
    """
    separates = not num_positives or bool(np.asarray(matched, dtype=bool).any())
    return reliable(num_negatives, target) and rate <= target and separates


def reliable(num_negatives: int, target: float) -> bool:
    """Whether ``num_negatives`` can measure a rate as small as ``target`` (ten errors or more).

    Examples:
        >>> reliable(1000, 0.01), reliable(999, 0.01)
        (True, False)
    """
    return bool(num_negatives >= RELIABLE_COUNT / target)
