"""Data: image folders and their errors, pairs, class-balanced batches, splits by class."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import Subset, TensorDataset

import siamkit
from siamkit.data import (
    ClassBalancedBatchSampler,
    FaceFolder,
    PairDataset,
    check_image_folder,
    dataset_labels,
    is_image_file,
    load_image,
    make_pairs,
    split_by_class,
)
from siamkit.evaluation import rank1_leave_one_out
from siamkit.exceptions import ConfigError, DataError, ImageReadError

CLASSES = [f"person{i}" for i in range(6)]


# -- the synthetic fixture itself ------------------------------------------------------
def test_synthetic_faces_layout(synthetic_faces):
    assert sorted(p.name for p in synthetic_faces.iterdir()) == CLASSES
    for person in CLASSES:
        files = sorted((synthetic_faces / person).iterdir())
        assert len(files) == 6
        with Image.open(files[0]) as image:
            assert image.mode == "L"
            assert image.size == (46, 56)


def test_synthetic_faces_are_learnable(synthetic_faces):
    faces = FaceFolder(synthetic_faces, mode="L")
    pixels = np.stack(
        [np.asarray(faces[i][0], dtype=np.float32).ravel() for i in range(len(faces))]
    )
    labels = np.asarray(faces.targets)
    # every image's nearest other image (raw pixels) shows the same class...
    assert rank1_leave_one_out(pixels / 255, labels, "euclidean") == 1.0
    # ...and the images of a class are not copies of each other
    assert np.abs(pixels[0] - pixels[1]).mean() > 1.0


# -- FaceFolder ------------------------------------------------------------------------
def test_face_folder_on_synthetic_faces(synthetic_faces):
    faces = FaceFolder(synthetic_faces, mode="L")
    assert faces.classes == CLASSES
    assert len(faces) == 36
    assert Counter(faces.targets) == dict.fromkeys(range(6), 6)
    assert len(faces.paths) == 36 and faces.paths[0].endswith(".png")
    image, label = faces[7]
    assert label == 1
    assert isinstance(image, Image.Image)
    assert (image.mode, image.size) == ("L", (46, 56))
    np.testing.assert_array_equal(dataset_labels(faces), faces.targets)


def test_face_folder_transform(synthetic_faces):
    encoder = siamkit.create_encoder("compact", embedding_dim=4, channels=(4,))
    faces = FaceFolder(synthetic_faces, transform=encoder.transform, mode="L")
    x, label = faces[0]
    assert isinstance(x, torch.Tensor)
    assert x.shape == (1, 56, 46)
    assert -1.0 <= x.min().item() < x.max().item() <= 1.0
    assert label == 0


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        FaceFolder(tmp_path / "nowhere")


def test_folder_without_class_folders(tmp_path):
    Image.new("L", (4, 4)).save(tmp_path / "a.png")
    with pytest.raises(DataError, match="no sub-folders"):
        FaceFolder(tmp_path)


def test_folder_without_any_image(make_image_folder):
    root = make_image_folder({"ann": 0, "bob": 0})
    with pytest.raises(DataError, match="no image files"):
        FaceFolder(root)


def test_empty_class_folder_is_named(make_image_folder):
    root = make_image_folder({"ann": 2, "bob": 0, "cid": 3})
    with pytest.raises(DataError, match="bob") as info:
        FaceFolder(root)
    assert "ann" not in str(info.value) and "cid" not in str(info.value)


def test_min_images_per_class_names_the_class(make_image_folder):
    root = make_image_folder({"ann": 2, "bob": 1, "cid": 3})
    assert len(FaceFolder(root)) == 6  # one is enough by default
    with pytest.raises(DataError, match="bob") as info:
        FaceFolder(root, min_images_per_class=2)
    message = str(info.value)
    assert "ann" not in message and "cid" not in message
    assert "fewer than 2" in message
    with pytest.raises(DataError, match="ann, bob"):
        FaceFolder(root, min_images_per_class=3)
    assert check_image_folder(root, 1) == {"ann": 2, "bob": 1, "cid": 3}


def test_non_image_with_image_extension_fails_on_load_naming_it(make_image_folder):
    root = make_image_folder({"ann": 2, "bob": 2})
    fake = root / "bob" / "zz_fake.jpg"
    fake.write_text("this is not a JPEG")
    faces = FaceFolder(root, mode="L")
    assert len(faces) == 5
    index = faces.paths.index(str(fake))
    with pytest.raises(ImageReadError, match=r"zz_fake\.jpg"):
        faces[index]
    assert faces[0][1] == 0  # the other images still load


def test_truncated_image_fails_naming_it(tmp_path):
    good = tmp_path / "good.png"
    noise = np.random.default_rng(0).integers(0, 255, size=(64, 64), dtype=np.uint8)
    Image.fromarray(noise).save(good)  # noise does not compress: the data is ~4 kB
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    assert load_image(good).size == (64, 64)
    with pytest.raises(ImageReadError, match=r"truncated\.png"):
        load_image(truncated)
    with pytest.raises(ImageReadError, match="not found"):
        load_image(tmp_path / "absent.png")
    assert isinstance(ImageReadError("x"), DataError)


def test_non_image_extensions_are_ignored(make_image_folder):
    root = make_image_folder({"ann": 2, "bob": 3})
    (root / "ann" / "README.txt").write_text("notes")
    (root / "bob" / "labels.csv").write_text("a,b")
    (root / "README.txt").write_text("top-level notes")
    faces = FaceFolder(root)
    assert len(faces) == 5
    assert not any(p.endswith((".txt", ".csv")) for p in faces.paths)
    assert is_image_file("x/1.PGM") and is_image_file("a.jpeg")
    assert not is_image_file("README.txt") and not is_image_file("noext")


def test_class_with_only_non_images_counts_as_empty(make_image_folder):
    root = make_image_folder({"ann": 2, "bob": 0})
    (root / "bob" / "README.txt").write_text("no faces here")
    with pytest.raises(DataError, match="bob"):
        FaceFolder(root)


def test_mixed_modes_are_converted(make_image_folder):
    root = make_image_folder({"ann": 2, "bob": 2}, mode="RGB")
    rgba = np.random.default_rng(0).integers(0, 255, size=(56, 46, 3), dtype=np.uint8)
    Image.fromarray(rgba, "RGB").convert("P").save(root / "ann" / "palette.png")
    Image.fromarray(rgba[..., 0], "L").save(root / "bob" / "grey.png")
    Image.fromarray(rgba, "RGB").save(root / "bob" / "colour.bmp")
    modes = set()
    for path in root.rglob("*"):
        if path.is_file():
            with Image.open(path) as image:
                modes.add(image.mode)
    assert modes == {"RGB", "P", "L"}

    faces = FaceFolder(root, mode="L")
    assert len(faces) == 7
    for i in range(len(faces)):
        image, _ = faces[i]
        assert image.mode == "L"
        assert image.size == (46, 56)
    as_rgb = FaceFolder(root, mode="RGB")
    assert {as_rgb[i][0].mode for i in range(len(as_rgb))} == {"RGB"}


def test_make_image_folder_sizes(make_image_folder):
    root = make_image_folder({"a": 1}, size=(20, 10))
    with Image.open(root / "a" / "0.png") as image:
        assert image.size == (20, 10)


# -- pairs -----------------------------------------------------------------------------------
LABELS = np.repeat(np.arange(6), [2, 3, 4, 5, 1, 6])


@pytest.mark.parametrize("num_pairs", [10, 41, 200])
def test_make_pairs_balanced_and_valid(num_pairs):
    pairs, same = make_pairs(LABELS, num_pairs=num_pairs, seed=3)
    assert pairs.shape == (num_pairs, 2) and pairs.dtype == np.int64
    assert same.shape == (num_pairs,) and same.dtype == bool
    assert same.sum() == (num_pairs + 1) // 2  # alternates: same, different, same...
    assert np.array_equal(same, np.arange(num_pairs) % 2 == 0)
    i, j = pairs[:, 0], pairs[:, 1]
    assert (i >= 0).all() and (j < len(LABELS)).all()
    np.testing.assert_array_equal(LABELS[i] == LABELS[j], same)
    assert (i[same] != j[same]).all()  # never one image twice
    assert 4 not in set(LABELS[pairs[same].ravel()])  # a class of one image cannot be a positive


def test_make_pairs_defaults_and_reproducibility():
    pairs, same = make_pairs(LABELS)
    assert len(pairs) == len(LABELS)
    again, same_again = make_pairs(LABELS)
    np.testing.assert_array_equal(pairs, again)
    np.testing.assert_array_equal(same, same_again)
    other, _ = make_pairs(LABELS, seed=1)
    assert not np.array_equal(pairs, other)


def test_make_pairs_errors():
    with pytest.raises(DataError, match="two images"):
        make_pairs([0, 1, 2], num_pairs=4)
    with pytest.raises(DataError, match="one class"):
        make_pairs([7, 7, 7], num_pairs=4)


def test_pair_dataset_items():
    values = torch.arange(len(LABELS), dtype=torch.float32) * 10
    base = TensorDataset(values, torch.from_numpy(LABELS))
    data = PairDataset(base, num_pairs=30, seed=5)
    assert len(data) == 30
    positives = 0
    for k in range(len(data)):
        x1, x2, same = data[k]
        i, j = int(x1.item() // 10), int(x2.item() // 10)
        assert same.dtype == torch.bool
        assert bool(same) == (LABELS[i] == LABELS[j])
        if same:
            assert i != j
        positives += bool(same)
    assert positives == 15
    twin = PairDataset(base, num_pairs=30, seed=5)
    np.testing.assert_array_equal(data.pairs, twin.pairs)
    assert not np.array_equal(data.pairs, PairDataset(base, num_pairs=30, seed=6).pairs)


def test_pair_dataset_on_subset_of_folder(synthetic_faces):
    faces = FaceFolder(synthetic_faces, mode="L")
    subset = Subset(faces, list(range(12, 36)))
    np.testing.assert_array_equal(dataset_labels(subset), np.asarray(faces.targets[12:36]))
    data = PairDataset(subset, num_pairs=8)
    x1, _, same = data[0]
    assert isinstance(x1, Image.Image) and bool(same)


def test_dataset_labels_generic():
    class Plain(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return None, [4, 5, 4][i]

    np.testing.assert_array_equal(dataset_labels(Plain()), [4, 5, 4])


# -- class-balanced batches ----------------------------------------------------------
def _sampler_labels() -> np.ndarray:
    return np.repeat(np.arange(8), [6, 6, 5, 7, 4, 6, 3, 8])  # 45 items


def test_class_balanced_batches():
    labels = _sampler_labels()
    sampler = ClassBalancedBatchSampler(labels, m_per_class=3, batch_size=12, seed=1)
    assert sampler.classes_per_batch == 4 and sampler.batch_size == 12
    batches = list(sampler)
    assert len(batches) == len(sampler) == round(45 / 12)
    for batch in batches:
        assert len(batch) == 12
        counts = Counter(labels[batch].tolist())
        assert len(counts) == 4  # distinct classes
        assert set(counts.values()) == {3}  # m of each
        for c in counts:  # without replacement when the class is big enough
            members = [i for i in batch if labels[i] == c]
            assert len(set(members)) == 3


def test_class_balanced_small_class_sampled_with_replacement():
    labels = np.array([0, 1, 1, 1, 1])
    sampler = ClassBalancedBatchSampler(labels, m_per_class=3, batch_size=6, seed=0)
    (batch,) = list(sampler)
    assert batch[:3] == [0, 0, 0] or batch[3:] == [0, 0, 0]
    assert Counter(labels[batch].tolist()) == {0: 3, 1: 3}


def test_class_balanced_reproducible_per_seed_and_epoch():
    labels = _sampler_labels()

    def batches(seed, epoch):
        sampler = ClassBalancedBatchSampler(labels, 2, 8, seed=seed, batches_per_epoch=6)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert batches(0, 0) == batches(0, 0)
    assert batches(0, 3) == batches(0, 3)
    assert batches(0, 0) != batches(0, 1)
    assert batches(0, 0) != batches(1, 0)
    assert len(batches(0, 0)) == 6
    # iterating twice in one epoch gives that epoch's batches again (resumable)
    sampler = ClassBalancedBatchSampler(labels, 2, 8, seed=0, batches_per_epoch=6)
    sampler.set_epoch(2)
    assert list(sampler) == list(sampler) == batches(0, 2)


def test_class_balanced_caps_and_errors():
    sampler = ClassBalancedBatchSampler([0, 0, 1, 1], m_per_class=2, batch_size=64)
    assert sampler.classes_per_batch == 2 and sampler.batch_size == 4
    assert ClassBalancedBatchSampler([0, 0, 1, 1, 2, 2], 2, batch_size=2).classes_per_batch == 2
    with pytest.raises(ConfigError):
        ClassBalancedBatchSampler([0, 0, 1, 1], m_per_class=1)
    with pytest.raises(DataError, match="two classes"):
        ClassBalancedBatchSampler([3, 3, 3, 3], m_per_class=2)


def test_class_balanced_works_with_a_dataloader(synthetic_faces):
    encoder = siamkit.create_encoder("compact", embedding_dim=4, channels=(4,))
    faces = FaceFolder(synthetic_faces, transform=encoder.transform, mode="L")
    sampler = ClassBalancedBatchSampler(faces.targets, m_per_class=2, batch_size=6, seed=0)
    loader = torch.utils.data.DataLoader(faces, batch_sampler=sampler)
    x, y = next(iter(loader))
    assert x.shape == (6, 1, 56, 46)
    assert sorted(Counter(y.tolist()).values()) == [2, 2, 2]


# -- splits by class -----------------------------------------------------------------
def test_split_by_class_fractions_disjoint(synthetic_faces):
    faces = FaceFolder(synthetic_faces)
    split = split_by_class(faces, val=0.34, test=1 / 6, seed=0)  # 2 val and 1 test of 6
    assert len(split.val_classes) == 2 and len(split.test_classes) == 1
    assert len(split.train_classes) == 3
    parts = [set(split.train_classes), set(split.val_classes), set(split.test_classes)]
    assert set.union(*parts) == set(CLASSES)
    assert sum(len(p) for p in parts) == 6  # disjoint
    assert (len(split.train), len(split.val), len(split.test)) == (18, 12, 6)
    targets = np.asarray(faces.targets)
    for subset, names in ((split.train, split.train_classes), (split.val, split.val_classes)):
        assert {faces.classes[t] for t in targets[subset.indices]} == set(names)
    assert split.train_classes == sorted(split.train_classes)


def test_split_by_class_counts_and_seed():
    data = TensorDataset(torch.zeros(40), torch.arange(10).repeat_interleave(4))
    split = split_by_class(data, val=3, test=2, seed=4)
    assert (len(split.train_classes), len(split.val_classes), len(split.test_classes)) == (5, 3, 2)
    assert (len(split.train), len(split.val), len(split.test)) == (20, 12, 8)
    again = split_by_class(data, val=3, test=2, seed=4)
    assert again.val_classes == split.val_classes and again.test_classes == split.test_classes
    seeds = {tuple(split_by_class(data, val=3, seed=s).val_classes) for s in range(6)}
    assert len(seeds) > 1
    default = split_by_class(data)
    assert len(default.val_classes) == round(0.25 * 10) and default.test_classes == []
    assert len(default.test) == 0


def test_split_by_class_explicit_classes(synthetic_faces):
    faces = FaceFolder(synthetic_faces)
    split = split_by_class(faces, val_classes=["person1", "person4"], test_classes=["person0"])
    assert split.val_classes == ["person1", "person4"]
    assert split.test_classes == ["person0"]
    assert split.train_classes == ["person2", "person3", "person5"]
    np.testing.assert_array_equal(split.test.indices, list(range(6)))


def test_split_explicit_val_with_random_test_never_collides():
    data = TensorDataset(torch.zeros(16), torch.arange(8).repeat_interleave(2))
    for seed in range(12):
        split = split_by_class(data, val_classes=["0", "1"], test=3, seed=seed)
        assert split.val_classes == ["0", "1"]
        assert len(split.test_classes) == 3
        assert not set(split.test_classes) & {"0", "1"}
        assert len(split.train_classes) == 3


def test_split_errors(synthetic_faces):
    faces = FaceFolder(synthetic_faces)
    with pytest.raises(ConfigError, match="nobody"):
        split_by_class(faces, val_classes=["nobody"])
    with pytest.raises(ConfigError, match="more than one"):
        split_by_class(faces, val_classes=["person1"], test_classes=["person1"])
    with pytest.raises(ConfigError, match="training"):
        split_by_class(faces, val=3, test=3)
    with pytest.raises(ConfigError, match="impossible"):
        split_by_class(faces, val=7)
    with pytest.raises(ConfigError, match="impossible"):
        split_by_class(faces, val=-1)


# -- the real AT&T faces ----------------------------------------------------------------
def test_orl_faces(orl_root):
    faces = siamkit.ATTFaces(orl_root)
    assert len(faces) == 400
    assert len(faces.classes) == 40
    assert set(faces.classes) == {f"s{i}" for i in range(1, 41)}
    assert Counter(faces.targets) == dict.fromkeys(range(40), 10)
    image, _ = faces[0]
    assert (image.mode, image.size) == ("L", (92, 112))
    split = split_by_class(faces, val=10, test=10, seed=0)
    assert (len(split.train), len(split.val), len(split.test)) == (200, 100, 100)
