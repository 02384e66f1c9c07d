import os
import pickle

import numpy as np
import pytest
import torch

from harness import data
from harness.config import DataConfig
from harness.errors import HarnessError


def test_class_folders_split_sizes_and_labels(tree):
    cfg = DataConfig(classes=("bird", "airplane"), n_per_class=25, val_per_class=10, seed=0)
    s = data.load_splits(cfg, tree)
    assert s.train_x.shape == (50, 3, 32, 32) and s.train_x.dtype == torch.uint8
    assert s.val_x.shape == (20, 3, 32, 32)
    assert s.test_x.shape == (24, 3, 32, 32)  # every test image of the two classes
    assert s.classes == ("bird", "airplane")
    assert torch.equal(torch.bincount(s.train_y), torch.tensor([25, 25]))
    # Label 0 is bird (blue), as the config orders them, not the folder order.
    blue = s.train_x[s.train_y == 0].float().mean((0, 2, 3))
    assert blue[2] > blue[0] + 50


def _rows(x):
    return {bytes(img.numpy().tobytes()) for img in x}


def test_train_and_val_are_disjoint_and_seeded(tree):
    cfg = DataConfig(classes=("airplane", "cat"), n_per_class=25, val_per_class=15, seed=3)
    a = data.load_splits(cfg, tree)
    assert not _rows(a.train_x) & _rows(a.val_x)
    assert not _rows(a.train_x) & _rows(a.test_x)
    b = data.load_splits(cfg, tree)
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_x, b.val_x)
    c = data.load_splits(DataConfig(classes=("airplane", "cat"), n_per_class=25, val_per_class=15, seed=4), tree)
    assert not torch.equal(a.train_x, c.train_x)


def test_a_class_draw_does_not_depend_on_the_other_classes(tree):
    a = data.load_splits(DataConfig(classes=("airplane", "bird"), n_per_class=10, val_per_class=5), tree)
    b = data.load_splits(DataConfig(classes=("cat", "airplane"), n_per_class=10, val_per_class=5), tree)
    assert torch.equal(a.train_x[a.train_y == 0], b.train_x[b.train_y == 1])


def test_decoded_images_are_cached(tree, tmp_path):
    cfg = DataConfig(classes=("airplane", "bird"), n_per_class=10, val_per_class=5)
    first = data.load_splits(cfg, tree)
    cached = list((tmp_path / "cache" / "decoded").glob("*.npy"))
    assert len(cached) == 4  # (train, test) x 2 classes
    # The cache, not the PNGs, now serves the pixels: break a PNG but keep its name, size and
    # modification time, and the load still succeeds...
    png = sorted((tree / "train" / "airplane").glob("*.png"))[0]
    st = png.stat()
    png.write_bytes(b"\0" * st.st_size)
    os.utime(png, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert torch.equal(data.load_splits(cfg, tree).train_x, first.train_x)
    # ...while a file rewritten in place (a new modification time) invalidates it.
    png.write_bytes(b"\0" * st.st_size)
    with pytest.raises(HarnessError, match="cannot decode image .*airplane"):
        data.load_splits(cfg, tree)


def test_corrupt_image_is_named(tree):
    bad = tree / "test" / "bird" / "bird_0003.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(HarnessError, match=r"cannot decode image .*bird_0003\.png"):
        data.load_splits(DataConfig(classes=("bird",) * 1 + ("cat",), n_per_class=5, val_per_class=5), tree)


def test_unknown_class_lists_the_valid_ones(tree):
    with pytest.raises(HarnessError, match="unknown class 'plane'; valid classes: airplane, automobile, bird, cat"):
        data.load_splits(DataConfig(classes=("plane", "bird")), tree)


def test_too_many_images_per_class(tree):
    with pytest.raises(HarnessError, match=r"class 'airplane' has 40 training images, but .* = 45"):
        data.load_splits(DataConfig(classes=("airplane", "bird"), n_per_class=40, val_per_class=5), tree)


def test_missing_and_unknown_layouts(tmp_path):
    with pytest.raises(HarnessError, match="does not exist; expected a class-folder tree"):
        data.load_splits(DataConfig(), tmp_path / "nope")
    (tmp_path / "odd").mkdir()
    with pytest.raises(HarnessError, match="holds no class folders; expected a class-folder tree .* cifar-10-batches-py"):
        data.load_splits(DataConfig(), tmp_path / "odd")


def _write_batches(root, per_batch=60, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        labels = rng.integers(0, 10, per_batch)
        imgs = np.clip(labels[:, None] * 25 + rng.integers(0, 5, (per_batch, 3072)), 0, 255).astype(np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": imgs, "labels": labels.tolist()}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(data.CIFAR10_CLASSES)}, f)
    return folder


def test_cifar_batches_layout(tmp_path):
    folder = _write_batches(tmp_path / "c")
    cfg = DataConfig(classes=("airplane", "truck"), n_per_class=5, val_per_class=3)
    for root in (tmp_path / "c", folder):  # the parent, or the folder itself
        s = data.load_splits(cfg, root)
        assert s.train_x.shape == (10, 3, 32, 32) and len(s.val_x) == 6
        # Label 1 = truck = CIFAR class 9: pixel values around 225.
        assert s.train_x[s.train_y == 1].float().mean() > 200
        assert s.train_x[s.train_y == 0].float().mean() < 10


def test_cifar_batches_corrupt(tmp_path):
    folder = _write_batches(tmp_path / "c")
    (folder / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(HarnessError, match="cannot read .*data_batch_3: it is corrupt"):
        data.load_splits(DataConfig(), tmp_path / "c")


def test_env_var_chooses_the_data_dir(tree, monkeypatch):
    monkeypatch.setenv("HARNESS_DATA_DIR", str(tree))
    s = data.load_splits(DataConfig(classes=("cat", "bird"), n_per_class=5, val_per_class=5))
    assert len(s.train_x) == 10


def test_real_data(real_data):
    s = data.load_splits(DataConfig(n_per_class=1000, val_per_class=500), real_data)
    assert s.train_x.shape == (3000, 3, 32, 32) and s.val_x.shape == (1500, 3, 32, 32)
    assert s.test_x.shape == (3000, 3, 32, 32)
    mean = s.test_x.float().mean((0, 2, 3)) / 255
    assert 0.3 < mean.mean() < 0.7
