"""FaceIndex under concurrent searches, adds, removes and upserts."""

from __future__ import annotations

import threading
import time

import faiss
import numpy as np
import pytest

from siamkit.index import FaceIndex

faiss.omp_set_num_threads(2)

DIM = 32
GROUP = 4  # items per group, added and removed by one call each


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_searches_see_whole_changes_while_another_thread_adds_and_removes(kind: str) -> None:
    rng = np.random.default_rng(0)
    centres = unit(rng.normal(size=(200, DIM)))  # group g: GROUP items around centre g

    def members(g: int) -> np.ndarray:
        return unit(centres[g] + 0.02 * rng.normal(size=(GROUP, DIM)))

    def ids(g: int) -> list[str]:
        return [f"g{g}-{j}" for j in range(GROUP)]

    index = FaceIndex(metric="cosine", index=kind, dim=DIM)
    static = range(0, 60)  # never touched
    for g in static:
        index.add(members(g), labels=g, ids=ids(g))
    dynamic = range(60, 200)
    present = set(static)
    stop = threading.Event()
    errors: list[str] = []
    searches = [0]

    def reader(seed: int) -> None:
        local = np.random.default_rng(seed)
        while not stop.is_set():
            groups = local.integers(0, 200, size=8)
            try:
                results = index.search(centres[groups], k=GROUP)
            except Exception as err:  # pragma: no cover - reported below
                errors.append(repr(err))
                return
            for g, matches in zip(groups.tolist(), results, strict=True):
                found = [m.id for m in matches]
                mine = [i for i in found if i.startswith(f"g{g}-")]
                if len(set(found)) != len(found):
                    errors.append(f"duplicated ids {found}")
                if len(mine) not in (0, GROUP):  # a group is added or removed in one call
                    errors.append(f"group {g} half visible: {found}")
                if any(m.label != int(m.id[1:].split("-")[0]) for m in matches):
                    errors.append(f"label of another item: {matches}")
                if g in static and len(mine) != GROUP:
                    errors.append(f"static group {g} lost: {found}")
            searches[0] += 1

    def writer() -> None:
        local = np.random.default_rng(1)
        try:
            for step in range(300):
                g = int(local.choice(dynamic))
                if g in present and step % 3 == 0:
                    index.upsert(members(g), labels=g, ids=ids(g))
                elif g in present:
                    assert index.remove(ids(g)) == GROUP
                    present.discard(g)
                else:
                    index.add(members(g), labels=g, ids=ids(g))
                    present.add(g)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(f"writer: {err!r}")
        finally:
            stop.set()

    threads = [threading.Thread(target=reader, args=(seed,)) for seed in range(4)]
    threads.append(threading.Thread(target=writer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert not errors, errors[:5]
    assert searches[0] > 10

    # Nothing lost, nothing duplicated: the index holds exactly the present groups.
    expected = sorted(i for g in present for i in ids(g))
    assert sorted(index.ids()) == expected and len(index) == len(expected)
    for g in range(200):
        found = {m.id for m in index.search(centres[g], k=GROUP)}
        assert (found == set(ids(g))) == (g in present)


def test_many_threads_adding_get_unique_automatic_ids() -> None:
    index = FaceIndex(metric="euclidean", dim=4)
    added: list[list] = []

    def worker() -> None:
        for _ in range(20):
            added.append(index.add(np.ones((3, 4), dtype=np.float32), labels="x"))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    flat = [i for ids in added for i in ids]
    assert len(flat) == len(set(flat)) == len(index) == 240
    assert sorted(flat) == list(range(240))


def test_a_long_search_does_not_block_other_searches() -> None:
    index = FaceIndex(metric="cosine", dim=DIM)
    index.add(unit(np.random.default_rng(2).normal(size=(2000, DIM))), labels="x")
    query = index.get(0).embedding
    with index.store.lock.read():  # a search in progress elsewhere
        started = time.perf_counter()
        assert index.search(query, k=1)[0].id == 0
        assert time.perf_counter() - started < 5
