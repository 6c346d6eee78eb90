"""N-way K-shot evaluation: hand-computed episodes, the seeded sampler, the runs' reader."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from siamkit.evaluation import (
    Episode,
    few_shot_accuracy,
    read_one_shot_runs,
    sample_episodes,
)
from siamkit.evaluation.few_shot import parse_few_shot
from siamkit.exceptions import ConfigError, DataError


def test_answers_by_the_nearest_prototype_as_computed_by_hand() -> None:
    # Class 0's two shots at 0 and 4 (prototype 2), class 1's at 5 and 7 (prototype 6).
    embeddings = np.array([[0.0], [4.0], [5.0], [7.0], [3.9], [4.1], [1.0], [9.0]], "float32")
    episode = Episode(support=(0, 1, 2, 3), queries=(4, 5, 6, 7), answers=(0, 1, 0, 1))
    # Query 4.1 is nearest the shot 4.0 of class 0, but nearer prototype 6 (1.9) than
    # prototype 2 (2.1): class 1. Query 3.9 is 1.9 from 2 and 2.1 from 6: class 0. 1.0 and
    # 9.0 are plain. So the first answers are all right, and the second half right.
    assert few_shot_accuracy(embeddings, [episode], "euclidean").accuracy == 1.0
    wrong = Episode(support=(0, 1, 2, 3), queries=(4, 5, 6, 7), answers=(1, 1, 0, 0))
    assert few_shot_accuracy(embeddings, [wrong], "euclidean").accuracy == 0.5
    # Two episodes scoring 1 and 0.5: the mean, and 1.96 standard errors over episodes.
    both = few_shot_accuracy(embeddings, [episode, wrong], "euclidean")
    assert both.accuracy == 0.75 and both.queries == 8 and (both.n_way, both.k_shot) == (2, 2)
    assert both.ci95 == pytest.approx(1.96 * np.std([1.0, 0.5], ddof=1) / math.sqrt(2))
    assert few_shot_accuracy(embeddings, [episode], "euclidean").ci95 is None


def test_cosine_compares_directions_of_the_prototypes() -> None:
    # Query (1, 0.5) points along class 0's shot (10, 0) but lies nearer (0, 1): cosine
    # gives it class 0, Euclidean distance class 1.
    embeddings = np.array([[10.0, 0.0], [0.0, 1.0], [1.0, 0.5], [0.0, 2.0]], "float32")
    episode = Episode(support=(0, 1), queries=(2, 3), answers=(0, 1))
    assert few_shot_accuracy(embeddings, [episode], "cosine").accuracy == 1.0
    assert few_shot_accuracy(embeddings, [episode], "euclidean").accuracy == 0.5


def test_the_sampler_repeats_from_its_seed_and_keeps_episodes_well_formed() -> None:
    labels = np.repeat(np.arange(12), 5)
    groups = np.repeat(["a", "b", "c"], 20)  # four classes per group
    episodes = sample_episodes(labels, 4, 2, 50, queries_per_class=2, groups=groups, seed=3)
    assert episodes == sample_episodes(labels, 4, 2, 50, queries_per_class=2, groups=groups, seed=3)
    assert episodes != sample_episodes(labels, 4, 2, 50, queries_per_class=2, groups=groups, seed=4)
    for e in episodes:
        assert len(e.support) == 8 and len(e.queries) == 8 and (e.n_way, e.k_shot) == (4, 2)
        assert not set(e.support) & set(e.queries)
        assert len({groups[i] for i in e.support + e.queries}) == 1  # within one group
        support_classes = labels[list(e.support)].reshape(4, 2)
        assert (support_classes[:, 0] == support_classes[:, 1]).all()
        assert len(set(support_classes[:, 0])) == 4
        for query, answer in zip(e.queries, e.answers, strict=True):
            assert labels[query] == support_classes[answer, 0]
    assert len({groups[e.support[0]] for e in episodes}) == 3  # every group is drawn


def test_the_sampler_refuses_what_cannot_be_drawn() -> None:
    labels = np.repeat(np.arange(6), 2)
    with pytest.raises(DataError, match="fewer than 7 classes"):
        sample_episodes(labels, n_way=7, k_shot=1)
    with pytest.raises(DataError, match="at least 3 images"):
        sample_episodes(labels, n_way=2, k_shot=2)  # 2 shots + 1 query from 2 images
    with pytest.raises(DataError, match="any group"):
        sample_episodes(labels, n_way=4, k_shot=1, groups=np.repeat(["a", "b"], 6))
    with pytest.raises(ConfigError, match="n_way"):
        sample_episodes(labels, n_way=1, k_shot=1)
    with pytest.raises(ConfigError):
        parse_few_shot("twenty")
    assert parse_few_shot("20X5") == (20, 5)


def _write_runs(root: Path, runs: int = 2, ways: int = 3) -> dict[str, int]:
    """Runs whose test item k matches training class (k + 1) % ways, images coding the class."""
    truth = {}
    for r in range(1, runs + 1):
        run = root / f"run{r:02d}"
        (run / "training").mkdir(parents=True)
        (run / "test").mkdir()
        lines = []
        for k in range(ways):
            Image.new("L", (4, 4), 40 * k).save(run / "training" / f"class{k + 1:02d}.png")
            match = (k + 1) % ways
            Image.new("L", (4, 4), 40 * match + 3).save(run / "test" / f"item{k + 1:02d}.png")
            lines.append(
                f"run{r:02d}/test/item{k + 1:02d}.png run{r:02d}/training/class{match + 1:02d}.png"
            )
            truth[f"run{r:02d}/test/item{k + 1:02d}.png"] = match
        (run / "class_labels.txt").write_text("\n".join(lines) + "\n")
    return truth


def test_the_official_runs_read_as_fixed_episodes(tmp_path) -> None:
    truth = _write_runs(tmp_path)
    runs = read_one_shot_runs(tmp_path)
    assert len(runs.episodes) == 2 and len(runs.paths) == 12
    for episode in runs.episodes:
        assert (episode.n_way, episode.k_shot, len(episode.queries)) == (3, 1, 3)
        for query, answer in zip(episode.queries, episode.answers, strict=True):
            support = runs.paths[episode.support[answer]]
            name = Path(runs.paths[query]).relative_to(tmp_path).as_posix()
            assert support.endswith(f"class{truth[name] + 1:02d}.png")
    # Pixel values code the class: raw pixels answer every run right.
    pixels = np.stack([np.asarray(Image.open(p), "float32").ravel() for p in runs.paths])
    assert few_shot_accuracy(pixels, runs.episodes, "euclidean").accuracy == 1.0


def test_a_run_naming_a_file_outside_its_folder_is_refused(tmp_path) -> None:
    _write_runs(tmp_path, runs=1)
    labels = tmp_path / "run01" / "class_labels.txt"
    labels.write_text("../../etc/passwd run01/training/class01.png\n")
    with pytest.raises(DataError, match="not a path inside"):
        read_one_shot_runs(tmp_path)
    labels.write_text("run01/test/item01.png\n")
    with pytest.raises(DataError, match="expected"):
        read_one_shot_runs(tmp_path)
    with pytest.raises(DataError, match="no one-shot run"):
        read_one_shot_runs(tmp_path / "run01")
    labels.write_text("run01/test/item01.png run01/test/item01.png\n")
    with pytest.raises(DataError, match="as its own training image"):
        read_one_shot_runs(tmp_path)


def test_a_run_reaching_outside_through_a_link_is_refused(tmp_path) -> None:
    runs, outside = tmp_path / "runs", tmp_path / "outside"
    _write_runs(runs, runs=1)
    (outside / "training").mkdir(parents=True)
    for image in (runs / "run01" / "training").iterdir():
        image.rename(outside / "training" / image.name)
    (runs / "run01" / "training").rmdir()
    (runs / "run01" / "training").symlink_to(outside / "training", target_is_directory=True)
    with pytest.raises(DataError, match="leads out of"):
        read_one_shot_runs(runs)


def test_eval_cli_adds_few_shot_to_the_table_the_json_and_the_report(tmp_path, capsys) -> None:
    import siamkit
    from siamkit.cli.main import main

    # A grouped folder (two alphabets of four characters) and an untrained encoder.
    data = tmp_path / "chars"
    rng = np.random.default_rng(0)
    for alphabet in ("Latin", "Greek"):
        for c in range(4):
            folder = data / alphabet / f"character{c:02d}"
            folder.mkdir(parents=True)
            centre = rng.integers(0, 255, size=(8, 8))
            for d in range(3):
                noisy = np.clip(centre + rng.normal(0, 4, size=(8, 8)), 0, 255).astype("uint8")
                Image.fromarray(noisy).save(folder / f"{d}.png")
    model = tmp_path / "model"
    siamkit.create_encoder("compact", channels=[8, 16], embedding_dim=8).save(model)
    _write_runs(tmp_path / "runs", runs=2, ways=3)
    out = tmp_path / "eval"
    runs = str(tmp_path / "runs")
    argv = ["eval", "--model", str(model), "--data", str(data), "--out", str(out),
            "--few-shot", "3x1", "--episodes", "40", "--runs", runs, "--json"]  # fmt: skip
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["num_people"] == 8 and printed["groups"] == 2  # characters, not alphabets
    seeded, fixed = printed["few_shot"]
    assert (seeded["n_way"], seeded["k_shot"], seeded["episodes"]) == (3, 1, 40)
    assert seeded["source"] == "seeded (seed 0, within groups)" and fixed["episodes"] == 2
    saved = json.loads((out / "evaluation.json").read_text())
    assert saved["few_shot"] == printed["few_shot"]
    assert "Few-shot classification" in (out / "report.html").read_text()
    assert main([*argv[:-1], "--few-shot", "3by1"]) == 2  # one line, no traceback
    assert "N-way x K-shot" in capsys.readouterr().err
