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
    with pytest.raises(HarnessError, match="unknown class 'plane'; valid classes: 'airplane', 'automobile', 'bird', 'cat'"):
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


# ---------------------------------------------------------------------------------------------
# Any image-folder data set: sizes, modes, formats, trees without splits, named sets


def _image(size, mode, colour, rng):
    from PIL import Image
    w, h = size
    arr = np.clip(rng.normal(colour, 30, (h, w, 3)), 0, 255).astype(np.uint8)
    im = Image.fromarray(arr)
    return im.convert(mode)


def _write_mixed_tree(root, n=15, seed=0):
    """One tree without splits: a = 8x8 gray PNG, b = 48x48 RGBA PNG, c = 100x75 RGB JPEG with red
    bands outside its central square (a centre crop removes them)."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    for name, size, mode, colour, suffix in (("a", (8, 8), "L", (200, 200, 200), ".png"),
                                             ("b", (48, 48), "RGBA", (40, 200, 40), ".png"),
                                             ("c", (100, 75), "RGB", (40, 40, 200), ".jpg")):
        (root / name).mkdir(parents=True)
        for i in range(n):
            im = _image(size, mode, colour, rng)
            if name == "c":
                arr = np.asarray(im).copy()
                arr[:, :12] = arr[:, -12:] = (255, 0, 0)
                im = Image.fromarray(arr)
            im.save(root / name / f"{name}{i:03d}{suffix}")
    return root


def test_any_size_mode_and_format_is_brought_to_the_configured_shape(tmp_path):
    root = _write_mixed_tree(tmp_path / "mixed")
    cfg = DataConfig(classes=("all",), n_per_class=5, val_per_class=2)
    s = data.load_splits(cfg, root)
    assert s.classes == ("a", "b", "c") and s.train_x.shape == (15, 3, 32, 32)
    gray = s.train_x[s.train_y == 0]
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])  # replicated
    c = s.train_x[s.train_y == 2].float()
    assert c[:, 0].mean() < 100 < c[:, 2].mean()  # the red bands were outside the centre square
    one = data.load_splits(DataConfig(classes=("all",), n_per_class=5, val_per_class=2, channels=1), root)
    assert one.train_x.shape == (15, 1, 32, 32)
    big = data.load_splits(DataConfig(classes=("all",), n_per_class=5, val_per_class=2, image_size=64), root)
    assert big.train_x.shape == (15, 3, 64, 64) and big.test_x.shape[1:] == (3, 64, 64)


def test_a_tree_without_splits_gets_a_fixed_stratified_test_split(tmp_path):
    root = _write_mixed_tree(tmp_path / "mixed", n=20)
    a = data.load_splits(DataConfig(classes=("all",), n_per_class=8, val_per_class=4, seed=0), root)
    b = data.load_splits(DataConfig(classes=("all",), n_per_class=8, val_per_class=4, seed=1), root)
    assert torch.equal(a.test_x, b.test_x)  # paired seeds share one test set
    assert not torch.equal(a.train_x, b.train_x)
    assert a.counts("test") == {"a": 4, "b": 4, "c": 4}  # 20% of each class
    rows = [_rows(getattr(a, f"{p}_x")) for p in ("train", "val", "test", "pool")]
    assert sum(map(len, rows)) == 60 and not set.union(*[r & q for r in rows for q in rows if r is not q])
    assert a.source.startswith("one class-folder tree without splits")
    third = data.load_splits(DataConfig(classes=("all",), n_per_class=5, val_per_class=2, test_fraction=0.5), root)
    assert third.counts("test") == {"a": 10, "b": 10, "c": 10}


def test_all_images_and_imbalanced_classes(tmp_path):
    root = _write_mixed_tree(tmp_path / "mixed", n=20)
    for extra in range(10):  # class a gets 30 images
        (root / "a" / f"extra{extra}.png").write_bytes((root / "a" / "a000.png").read_bytes())
    s = data.load_splits(DataConfig(classes=("all",), n_per_class=0, val_per_class=2), root)
    assert s.counts("train") == {"a": 22, "b": 14, "c": 14}  # 30 - 6 test - 2 val; 20 - 4 - 2
    assert len(s.pool_x) == 0


@pytest.mark.parametrize("setup,message", [
    (lambda r: (r / "a" / "notes.txt").write_text("hi"), "notes.txt is not an image"),
    (lambda r: [p.unlink() for p in (r / "b").iterdir()], "class folder .*b has no images"),
    (lambda r: (r / "train").mkdir(), "has train/ but no test/"),
    (lambda r: [(r / d).mkdir() for d in ("train", "test")], "mixes layouts"),
    (lambda r: (r / "c" / "c000.jpg").write_bytes(b"not a jpeg"), "cannot decode image .*c000.jpg"),
])
def test_bad_trees_are_named(tmp_path, setup, message):
    root = _write_mixed_tree(tmp_path / "mixed", n=10)
    setup(root)
    with pytest.raises(HarnessError, match=message):
        data.load_splits(DataConfig(classes=("all",), n_per_class=4, val_per_class=1), root)


def test_one_class_and_unsupported_sizes(tmp_path):
    root = tmp_path / "one"
    (root / "only").mkdir(parents=True)
    _image((32, 32), "RGB", (0, 0, 0), np.random.default_rng(0)).save(root / "only" / "x.png")
    with pytest.raises(HarnessError, match="has one class only"):
        data.load_splits(DataConfig(classes=("all",), n_per_class=1, val_per_class=0), root)
    with pytest.raises(HarnessError, match="data.image_size must be one of 32, 64"):
        from harness import config
        config.load("tiny", ["data.image_size=48"])


def _write_cifar100(root, per_split=40, seed=0):
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    names = [f"class{i:02d}" for i in range(100)]
    for split in ("train", "test"):
        labels = np.repeat([3, 7], per_split // 2)
        imgs = np.clip(labels[:, None] * 30 + rng.integers(0, 5, (per_split, 3072)), 0, 255).astype(np.uint8)
        with open(folder / split, "wb") as f:
            pickle.dump({"data": imgs, "fine_labels": labels.tolist(), "coarse_labels": [0] * per_split}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": names, "coarse_label_names": ["x"] * 20}, f)


def _write_svhn(root, per_split=40, seed=0):
    from scipy.io import savemat
    rng = np.random.default_rng(seed)
    (root / "svhn").mkdir(parents=True)
    for split in ("train", "test"):
        y = np.tile([10, 1, 2], per_split)[:per_split]  # SVHN writes the digit 0 as label 10
        x = np.clip(np.where(y == 10, 0, y)[None, None, None, :] * 80 + rng.integers(0, 5, (32, 32, 3, per_split)),
                    0, 255).astype(np.uint8)
        savemat(root / "svhn" / f"{split}_32x32.mat", {"X": x, "y": y[:, None]})


def _write_fashion(root, per_split=40, seed=0):
    import struct
    rng = np.random.default_rng(seed)
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        y = np.tile([0, 9], per_split // 2).astype(np.uint8)
        x = np.clip(y[:, None, None].astype(int) * 25 + rng.integers(0, 5, (per_split, 28, 28)), 0, 255).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">iiii", 2051, per_split, 28, 28) + x.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 2049, per_split) + y.tobytes())


@pytest.mark.parametrize("name,write,classes,dark,bright", [
    ("CIFAR100", _write_cifar100, ("class07", "class03"), "class03", "class07"),
    ("SVHN", _write_svhn, ("0", "2"), "0", "2"),
    ("FashionMNIST", _write_fashion, ("T-shirt/top", "Ankle boot"), "T-shirt/top", "Ankle boot"),
])
def test_named_sets_read_their_official_files(tmp_path, name, write, classes, dark, bright):
    write(tmp_path / "sets")
    cfg = DataConfig(source=f"torchvision:{name}", classes=classes, n_per_class=8, val_per_class=4)
    s = data.load_splits(cfg, tmp_path / "sets")
    assert s.train_x.shape[1:] == (3, 32, 32) and len(s.train_x) == 16 and len(s.classes) == 2
    assert s.train_x[s.train_y == s.classes.index(dark)].float().mean() < \
        s.train_x[s.train_y == s.classes.index(bright)].float().mean() - 50


def test_named_set_without_files_or_network_says_so(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading: no network")

    monkeypatch.setattr(tvd, "KMNIST", offline)
    with pytest.raises(HarnessError, match="downloading torchvision's KMNIST into .* failed .*pass --data-dir"):
        data.load_splits(DataConfig(source="torchvision:KMNIST", classes=("all",)), tmp_path / "empty")
    with pytest.raises(HarnessError, match="torchvision:STL10 is not supported; choose torchvision:CIFAR10"):
        data.load_splits(DataConfig(source="torchvision:STL10"), tmp_path / "empty")


def test_16_bit_gray_and_names_mlflow_cannot_take(tmp_path):
    from PIL import Image
    root = tmp_path / "sixteen"
    for name, value in (("dark", 10000), ("bright", 60000)):
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((16, 16), value, np.uint16)).save(root / name / f"{i}.png")
    s = data.load_splits(DataConfig(classes=("all",), n_per_class=3, val_per_class=1), root)
    means = {c: s.train_x[s.train_y == i].float().mean().item() for i, c in enumerate(s.classes)}
    assert means["dark"] == pytest.approx(10000 / 257, abs=1) and means["bright"] == pytest.approx(60000 / 257, abs=1)
    (root / "rock&roll").mkdir()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "rock&roll" / "x.png")
    with pytest.raises(HarnessError, match="class name 'rock&roll' cannot be used"):
        data.load_splits(DataConfig(classes=("all",), n_per_class=3, val_per_class=1), root)
