"""N-way K-shot evaluation: can the embedding tell new classes apart from K examples each?

An *episode* draws ``n_way`` classes never trained on, ``k_shot`` support
images of each and some query images; each query is given the class whose
support is nearest. Nearest means the smallest distance to the class's
prototype, the mean of its support embeddings (for one shot, the support
image itself), in the encoder's own geometry (:mod:`siamkit.geometry`), so it
is the distance training, the thresholds and the face index use.

Episodes are drawn from a seed (:func:`sample_episodes`; the same seed gives
the same episodes), within one group of classes when the data has groups
(one alphabet of Omniglot, as Lake et al.'s runs are), or read as fixed
episodes (:func:`read_one_shot_runs`: the 20 official 20-way one-shot runs).
Accuracy comes with a 95% confidence interval over the episodes.

Examples:
    >>> import numpy as np
    >>> embeddings = np.array([[0.0], [0.1], [5.0], [5.2]], dtype="float32")
    >>> episodes = sample_episodes(np.array([0, 0, 1, 1]), n_way=2, k_shot=1, episodes=4)
    >>> few_shot_accuracy(embeddings, episodes, "euclidean").accuracy
    1.0
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from siamkit.exceptions import ConfigError, DataError
from siamkit.geometry import pairwise_distances, prepare

if TYPE_CHECKING:
    from siamkit.encoders.base import Encoder
    from siamkit.runtime import OnnxEncoder

#: The file of each official run naming the training image each test image matches.
RUN_LABELS_FILE = "class_labels.txt"


@dataclass(frozen=True)
class Episode:
    """One N-way K-shot task, as positions into a list of images or embeddings.

    Attributes:
        support: ``n_way * k_shot`` positions, class by class (``k_shot`` of the first class, ...).
        queries: The query positions.
        answers: For each query, its class: an index into the ``n_way`` classes.

    Examples:
        >>> Episode(support=(0, 2), queries=(1, 3), answers=(0, 1)).n_way
        2
    """

    support: tuple[int, ...]
    queries: tuple[int, ...]
    answers: tuple[int, ...]

    @property
    def n_way(self) -> int:
        """Classes in the episode."""
        return max(self.answers) + 1 if self.answers else 0

    @property
    def k_shot(self) -> int:
        """Support images per class."""
        return len(self.support) // max(self.n_way, 1)


@dataclass(frozen=True)
class FewShotResult:
    """How often a query was given its own class, over many episodes.

    Attributes:
        n_way: Classes per episode.
        k_shot: Support images per class.
        episodes: Episodes run.
        queries: Queries answered, over all episodes.
        accuracy: The share answered right (the mean of the episodes' accuracies).
        ci95: Half-width of the 95% confidence interval of ``accuracy``
            (1.96 standard errors over the episodes); None for one episode.
        source: Where the episodes came from.

    Examples:
        >>> FewShotResult(20, 1, 1000, 20000, 0.93, 0.004, "seeded").summary()
        '20-way 1-shot: 93.00% ± 0.40% (1,000 episodes, seeded)'
    """

    n_way: int
    k_shot: int
    episodes: int
    queries: int
    accuracy: float
    ci95: float | None
    source: str

    def summary(self) -> str:
        """One line: ways, shots, accuracy and its interval, episodes."""
        spread = "" if self.ci95 is None else f" ± {100 * self.ci95:.2f}%"
        return (
            f"{self.n_way}-way {self.k_shot}-shot: {100 * self.accuracy:.2f}%{spread} "
            f"({self.episodes:,} episodes, {self.source})"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return asdict(self)


@dataclass(frozen=True)
class FewShot:
    """What few-shot evaluation :func:`~siamkit.evaluation.evaluate_encoder` adds.

    Attributes:
        n_way: Classes per seeded episode.
        k_shot: Support images per class.
        episodes: Seeded episodes drawn from the evaluated folder's classes
            (within groups when the folder has them); 0 for none.
        runs: A folder of fixed one-shot runs (:func:`read_one_shot_runs`) to
            score too, or None.

    Examples:
        >>> FewShot(5, 1, episodes=100).n_way
        5
    """

    n_way: int = 20
    k_shot: int = 1
    episodes: int = 1000
    runs: str | os.PathLike | None = None


def few_shot_results(
    encoder: Any, few_shot: FewShot, embedded: tuple[np.ndarray, np.ndarray, list[str] | None],
    seed: int, progress: bool = False,
) -> list[FewShotResult]:  # fmt: skip
    """The seeded episodes over already embedded images (labels, groups), then the runs.

    Examples:
        >>> from types import SimpleNamespace
        >>> encoder = SimpleNamespace(metric="euclidean")  # what is used of it without runs
        >>> vectors, labels = np.array([[0.0], [0.1], [4.0], [4.1]]), np.array([0, 0, 1, 1])
        >>> results = few_shot_results(encoder, FewShot(2, 1, 3), (vectors, labels, None), 0)
        >>> [r.accuracy for r in results]
        [1.0]
    """
    embeddings, labels, groups = embedded
    results = []
    if few_shot.episodes:
        drawn = sample_episodes(labels, few_shot.n_way, few_shot.k_shot, few_shot.episodes,
                                groups=groups, seed=seed)  # fmt: skip
        where = "within groups" if groups is not None else "any classes"
        results.append(few_shot_accuracy(embeddings, drawn, encoder.metric,
                                         source=f"seeded (seed {seed}, {where})"))  # fmt: skip
    if few_shot.runs is not None:
        runs = read_one_shot_runs(few_shot.runs)
        results.append(evaluate_few_shot(encoder, runs, progress=progress))
    return results


def parse_few_shot(spec: str) -> tuple[int, int]:
    """``"20x1"`` (N-way x K-shot) as ``(20, 1)``.

    Raises:
        ConfigError: not two positive integers joined by ``x``, or fewer than 2 ways.

    Examples:
        >>> parse_few_shot("5x5")
        (5, 5)
    """
    parts = str(spec).lower().split("x")
    try:
        n_way, k_shot = (int(part) for part in parts)
    except ValueError:
        raise ConfigError(f"few-shot must be N-way x K-shot such as 20x1, got {spec!r}") from None
    if n_way < 2 or k_shot < 1:
        raise ConfigError(f"few-shot needs at least 2 ways and 1 shot, got {spec!r}")
    return n_way, k_shot


def sample_episodes(
    labels: Sequence[Any] | np.ndarray,
    n_way: int = 20,
    k_shot: int = 1,
    episodes: int = 1000,
    *,
    queries_per_class: int = 1,
    groups: Sequence[Any] | None = None,
    seed: int = 0,
) -> list[Episode]:
    """Seeded N-way K-shot episodes over labelled images, within one group when given.

    Each episode picks a group (uniformly, among those with ``n_way`` classes
    of ``k_shot + queries_per_class`` images), ``n_way`` of its classes, and
    for each class ``k_shot`` support and ``queries_per_class`` query images,
    all without replacement. The same arguments give the same episodes.

    Args:
        labels: The class of each image.
        n_way: Classes per episode.
        k_shot: Support images per class.
        episodes: How many episodes.
        queries_per_class: Query images per class and episode.
        groups: The group of each image (e.g. its alphabet), or None: any classes.
        seed: Seeds every draw.

    Raises:
        ConfigError: a count below 1, or fewer than 2 ways.
        DataError: no group (or not the data) has ``n_way`` classes with enough images.

    Examples:
        >>> labels = np.repeat(np.arange(4), 3)
        >>> first = sample_episodes(labels, n_way=3, k_shot=2, episodes=2, seed=1)
        >>> first == sample_episodes(labels, n_way=3, k_shot=2, episodes=2, seed=1)
        True
        >>> len(first[0].support), len(first[0].queries)
        (6, 3)
    """
    for name, value, least in (("n_way", n_way, 2), ("k_shot", k_shot, 1),
                               ("episodes", episodes, 1),
                               ("queries_per_class", queries_per_class, 1)):  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ConfigError(f"{name} must be an integer of at least {least}, got {value!r}")
    pools = _class_pools(np.asarray(labels), groups, k_shot + queries_per_class, n_way)
    rng = np.random.default_rng(seed)
    drawn = []
    for _ in range(episodes):
        pool = pools[int(rng.integers(len(pools)))]
        chosen = rng.choice(len(pool), size=n_way, replace=False)
        support: list[int] = []
        queries: list[int] = []
        answers: list[int] = []
        for answer, position in enumerate(chosen):
            images = rng.choice(pool[position], size=k_shot + queries_per_class, replace=False)
            support += [int(i) for i in images[:k_shot]]
            queries += [int(i) for i in images[k_shot:]]
            answers += [answer] * queries_per_class
        drawn.append(Episode(tuple(support), tuple(queries), tuple(answers)))
    return drawn


def _class_pools(
    labels: np.ndarray, groups: Sequence[Any] | None, needed: int, n_way: int
) -> list[list[np.ndarray]]:
    """Per group (or one for all), the image positions of each class with ``needed`` images."""
    if groups is not None and len(groups) != len(labels):
        raise ConfigError(f"groups has {len(groups)} entries for {len(labels)} labels")
    keys = np.zeros(len(labels), dtype=int) if groups is None else np.asarray(groups)
    pools = []
    for key in sorted(set(keys.tolist()), key=str):
        inside = np.flatnonzero(keys == key)
        classes = [
            inside[labels[inside] == c] for c in sorted(set(labels[inside].tolist()), key=str)
        ]
        enough = [images for images in classes if len(images) >= needed]
        if len(enough) >= n_way:
            pools.append(enough)
    if not pools:
        where = "any group" if groups is not None else "the data"
        raise DataError(
            f"{where} has fewer than {n_way} classes of at least {needed} images: draw "
            "fewer ways or shots, or evaluate on more classes"
        )
    return pools


def few_shot_accuracy(
    embeddings: np.ndarray, episodes: Sequence[Episode], metric: str, *, source: str = "seeded"
) -> FewShotResult:
    """Answer every episode's queries by the nearest class prototype, and score them.

    Args:
        embeddings: ``(N, D)``, the rows the episodes' positions point at.
        episodes: The episodes (all of one ``n_way`` and ``k_shot``).
        metric: The encoder's geometry.
        source: Where the episodes came from, for the result.

    Raises:
        ConfigError: no episodes, or episodes of different shapes.

    Examples:
        >>> embeddings = np.array([[0.0], [1.0], [0.4], [0.6]], dtype="float32")
        >>> episode = Episode(support=(0, 1), queries=(2, 3), answers=(0, 1))
        >>> few_shot_accuracy(embeddings, [episode], "euclidean").accuracy
        1.0
    """
    if not episodes:
        raise ConfigError("few-shot accuracy needs at least one episode")
    shapes = {(e.n_way, e.k_shot) for e in episodes}
    if len(shapes) > 1:
        raise ConfigError(f"the episodes differ in ways and shots: {sorted(shapes)}")
    ((n_way, k_shot),) = shapes
    vectors = prepare(np.asarray(embeddings, dtype=np.float32), metric)
    scores = np.empty(len(episodes))
    for number, episode in enumerate(episodes):
        support = vectors[list(episode.support)].reshape(n_way, k_shot, -1)
        prototypes = support.mean(axis=1) if k_shot > 1 else support[:, 0]
        distances = pairwise_distances(vectors[list(episode.queries)], prototypes, metric)
        scores[number] = float(np.mean(np.argmin(distances, axis=1) == np.asarray(episode.answers)))
    ci95 = None if len(scores) < 2 else float(1.96 * scores.std(ddof=1) / math.sqrt(len(scores)))
    return FewShotResult(
        n_way=n_way,
        k_shot=k_shot,
        episodes=len(episodes),
        queries=sum(len(e.queries) for e in episodes),
        accuracy=float(scores.mean()),
        ci95=ci95,
        source=source,
    )


@dataclass(frozen=True)
class FixedEpisodes:
    """Episodes over a list of image files, such as Lake et al.'s official runs.

    Attributes:
        paths: The image files the episodes' positions point at.
        episodes: One episode per run.

    Examples:
        >>> runs = FixedEpisodes(["a.png", "b.png", "q.png"], [Episode((0, 1), (2,), (1,))])
        >>> runs.paths[runs.episodes[0].support[runs.episodes[0].answers[0]]]
        'b.png'
    """

    paths: list[str]
    episodes: list[Episode]


def read_one_shot_runs(folder: str | os.PathLike) -> FixedEpisodes:
    """Lake et al.'s one-shot runs: ``runNN/class_labels.txt`` in ``folder``, one episode each.

    Each line of ``class_labels.txt`` is ``runNN/test/itemKK.png
    runNN/training/classJJ.png``: a query and its one matching support image.
    Every file named must be a plain path inside ``folder``.

    Raises:
        DataError: no run, a malformed line, a path outside ``folder`` or a missing image.

    Examples:
        >>> runs = read_one_shot_runs("../shared/data/omniglot/one_shot_runs")  # doctest: +SKIP
        >>> len(runs.episodes), runs.episodes[0].n_way  # doctest: +SKIP
        (20, 20)
    """
    root = Path(folder)
    runs = sorted(p for p in root.glob(f"*/{RUN_LABELS_FILE}") if p.is_file())
    if not runs:
        raise DataError(f"{root} holds no one-shot run (no */{RUN_LABELS_FILE})")
    paths: list[str] = []
    episodes = []
    for labels_file in runs:
        pairs = _run_pairs(root, labels_file)
        if any(query == support for query, support in pairs):
            raise DataError(f"{labels_file} names a test image as its own training image")
        supports = sorted({support for _, support in pairs})
        start = len(paths)
        paths += supports + [query for query, _ in pairs]
        where = {support: start + i for i, support in enumerate(supports)}
        queries = range(start + len(supports), len(paths))
        episodes.append(Episode(
            support=tuple(where[s] for s in supports),
            queries=tuple(queries),
            answers=tuple(where[support] - start for _, support in pairs),
        ))  # fmt: skip
    return FixedEpisodes(paths, episodes)


def _run_pairs(root: Path, labels_file: Path) -> list[tuple[str, str]]:
    pairs = []
    for number, line in enumerate(labels_file.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        names = line.split()
        if len(names) != 2:
            raise DataError(f"{labels_file}:{number}: expected 'test-image training-image'")
        pairs.append(tuple(_inside(root, name, labels_file, number) for name in names))
    if not pairs:
        raise DataError(f"{labels_file} names no test image")
    return pairs  # type: ignore[return-value]


def _inside(root: Path, name: str, labels_file: Path, number: int) -> str:
    """``root/name`` for a plain relative path inside ``root`` that is a file."""
    parts = Path(name).parts
    if Path(name).is_absolute() or ".." in parts or not parts:
        raise DataError(
            f"{labels_file}:{number}: {name!r} is not a path inside {root}: the runs name "
            "their images relative to the runs folder"
        )
    path = root / name
    if not path.is_file():
        raise DataError(f"{labels_file}:{number}: the image {path} does not exist")
    if not path.resolve().is_relative_to(root.resolve()):  # a link out of the runs folder
        raise DataError(
            f"{labels_file}:{number}: {name!r} leads out of {root} through a link: the runs' "
            "images must lie inside the runs folder"
        )
    return str(path)


def evaluate_few_shot(
    encoder: Encoder | OnnxEncoder,
    data: Any,
    n_way: int = 20,
    k_shot: int = 1,
    episodes: int = 1000,
    *,
    seed: int = 0,
    within_groups: bool = True,
    layout: str = "auto",
    progress: bool = False,
) -> FewShotResult:
    """N-way K-shot accuracy of ``encoder`` on a folder of classes (the classes never trained on).

    ``data`` is a folder (read in the layout it shows: grouped folders give
    episodes within one group), a :class:`~siamkit.data.FaceFolder` or a
    ``Subset`` of one, or :class:`FixedEpisodes` (the official runs; then the
    counts and the seed are the runs').

    Raises:
        DataError: too few classes with enough images, or an image without a
            face under the aligner's ``on_missing="skip"`` in fixed episodes.

    Examples:
        >>> evaluate_few_shot(encoder, "omniglot-py/images_evaluation")  # doctest: +SKIP
        FewShotResult(n_way=20, k_shot=1, episodes=1000, ...)
    """
    from siamkit._embedding import embed_items

    if isinstance(data, FixedEpisodes):
        embedded = embed_items(data.paths, encoder, None, progress=progress)
        if embedded.skipped:
            raise DataError(
                f"{len(embedded.skipped)} images of the fixed episodes have no face, so their "
                "episodes cannot be scored: use the aligner's on_missing='fallback'"
            )
        return few_shot_accuracy(embedded.embeddings, data.episodes, encoder.metric,
                                 source=f"{len(data.episodes)} fixed runs")  # fmt: skip
    from siamkit.evaluation.runner import LabelledImages

    images = LabelledImages.of(data, layout=layout)
    embedded = embed_items(images.paths, encoder, None, progress=progress)
    labels = images.labels[embedded.kept]
    groups = None
    if within_groups and images.groups is not None:
        groups = [images.groups[int(label)] for label in labels]
    asked = FewShot(n_way, k_shot, episodes)
    return few_shot_results(encoder, asked, (embedded.embeddings, labels, groups), seed)[0]


__all__ = [
    "Episode",
    "FewShot",
    "FewShotResult",
    "FixedEpisodes",
    "evaluate_few_shot",
    "few_shot_accuracy",
    "few_shot_results",
    "parse_few_shot",
    "read_one_shot_runs",
    "sample_episodes",
]
