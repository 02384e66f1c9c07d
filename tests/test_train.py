import dataclasses

import torch

from harness import config, train


def _toy(n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    base = torch.tensor([[220, 40, 40], [40, 220, 40], [40, 40, 220]])[y]
    x = (base[:, :, None, None] + torch.randn(n, 3, 32, 32, generator=g) * 30).clamp(0, 255).to(torch.uint8)
    return x, y


def test_training_is_repeatable_and_learns():
    x, y = _toy()
    cfg = dataclasses.replace(config.load("tiny").classifier, epochs=3, augmentation="crop-flip")
    a, ha = train.train_classifier(x, y, 3, cfg, torch.device("cpu"), val=(x, y))
    b, hb = train.train_classifier(x, y, 3, cfg, torch.device("cpu"), val=(x, y))
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert ha.epochs == hb.epochs
    assert ha.epochs[-1]["val/accuracy"] > 0.9
    c, _ = train.train_classifier(x, y, 3, dataclasses.replace(cfg, seed=1), torch.device("cpu"))
    assert not torch.equal(a.head[-1].weight, c.head[-1].weight)


def test_augment_batch_crops_and_flips():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.int64).view(2, 3, 32, 32).remainder(251).to(torch.uint8)
    gen = torch.Generator().manual_seed(0)
    seen_shift = seen_flip = False
    for _ in range(20):
        out = train.augment_batch(x, gen)
        assert out.shape == x.shape and out.dtype == torch.uint8
        for i in range(2):
            found = False
            for img in (out[i], out[i].flip(2)):
                # Each output is the input shifted by (dy, dx) in [-4, 4] with zero fill.
                for dy in range(-4, 5):
                    for dx in range(-4, 5):
                        shifted = torch.zeros_like(x[i])
                        src = x[i][:, max(dy, 0):32 + min(dy, 0), max(dx, 0):32 + min(dx, 0)]
                        shifted[:, max(-dy, 0):32 + min(-dy, 0), max(-dx, 0):32 + min(-dx, 0)] = src
                        if torch.equal(img, shifted):
                            found = True
                            seen_shift |= (dy, dx) != (0, 0)
                            seen_flip |= img is not out[i]
            assert found
    assert seen_shift and seen_flip


def test_pick_device():
    assert train.pick_device("cpu").type == "cpu"
    assert train.pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")



import pytest  # noqa: E402


@pytest.mark.parametrize("kind", ["crop-flip", "trivialaugment", "randaugment", "mixup", "cutmix"])
def test_each_augmentation_on_a_toy_batch(kind):
    torch.manual_seed(0)
    x, y = _toy(64)
    gen = torch.Generator().manual_seed(0)
    out, soft = train.augment(x, y, kind, gen, 3, {})
    assert out.shape == x.shape
    assert (out.float() - x.float()).abs().mean() > 1.0  # it changes the images
    if kind in ("mixup", "cutmix"):
        assert out.dtype == torch.float32 and 0 <= out.min() and out.max() <= 255
        assert soft.shape == (64, 3) and torch.allclose(soft.sum(1), torch.ones(64))
        assert ((soft > 0) & (soft < 1)).any(dim=1).float().mean() > 0.5  # labels mix
    else:
        assert out.dtype == torch.uint8 and soft is None
    if kind in ("trivialaugment", "randaugment"):  # one op drawn per image, not one for the batch
        base, _ = train.augment(x, y, "crop-flip", torch.Generator().manual_seed(0), 3, {})
        changed = [(o.float() - b.float()).abs().mean().item() for o, b in zip(out, base)]
        assert len({round(c, 3) for c in changed}) > 5


@pytest.mark.parametrize("kind", ["trivialaugment", "mixup"])
def test_training_with_an_augmentation_learns(kind):
    x, y = _toy()
    cfg = dataclasses.replace(config.load("tiny").classifier, epochs=4, augmentation=kind)
    _, h = train.train_classifier(x, y, 3, cfg, torch.device("cpu"), val=(x, y))
    assert h.epochs[-1]["val/accuracy"] > 0.8
