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


@pytest.mark.parametrize("optimizer,schedule,lr", [("sgd", "onecycle", 0.05), ("adam", "cosine", 1e-3)])
def test_optimizers_and_schedules_follow_the_config(optimizer, schedule, lr):
    x, y = _toy()
    cfg = dataclasses.replace(config.load("tiny").classifier, epochs=4, optimizer=optimizer, schedule=schedule, lr=lr,
                              weight_decay=5e-4)
    model = torch.nn.Linear(2, 2)
    total = 40
    opt, sched = train._optimizer(model, cfg, total)
    assert isinstance(opt, torch.optim.SGD if optimizer == "sgd" else torch.optim.Adam)
    assert opt.param_groups[0]["weight_decay"] == 5e-4
    seen = []
    for _ in range(total):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    # onecycle warms up to lr at 25% of the steps, then anneals; cosine starts at lr; both end near 0.
    peak = max(seen)
    assert abs(peak - lr) / lr < 0.05 and seen[-1] < 0.05 * lr
    assert (seen.index(peak) in range(8, 12)) if schedule == "onecycle" else seen[0] == lr
    _, h = train.train_classifier(x, y, 3, cfg, torch.device("cpu"), val=(x, y))
    assert h.epochs[-1]["val/accuracy"] > 0.8


def test_the_constant_schedule_has_no_scheduler():
    cfg = config.load("tiny").classifier
    assert (cfg.optimizer, cfg.schedule) == ("adam", "constant")  # the reference's arithmetic
    opt, sched = train._optimizer(torch.nn.Linear(2, 2), cfg, 10)
    assert sched is None and isinstance(opt, torch.optim.Adam)


def test_a_step_budget_gives_every_data_size_the_same_steps():
    base = dataclasses.replace(config.load("tiny").classifier, epochs=4, real_only_epochs=1, steps=40, batch_size=16)
    for n, epochs, real_only in [(120, 5, 1), (48, 13, 3), (1000, 1, 0)]:  # 8, 3 and 63 steps per epoch
        got = train.in_epochs(base, n)
        assert (got.epochs, got.real_only_epochs, got.steps) == (epochs, real_only, 0), n
    assert train.in_epochs(dataclasses.replace(base, steps=0), 48) == dataclasses.replace(base, steps=0)
    x, y = _toy(48)
    _, h = train.train_classifier(x, y, 3, base, torch.device("cpu"), val=(x, y))
    assert len(h.epochs) == 13  # 39 steps, the nearest whole epochs to 40
    # validated at the nominal cadence (every ceil(13 / 4) = 4 epochs) and on the last epoch
    assert [i for i, row in enumerate(h.epochs, 1) if "val/accuracy" in row] == [4, 8, 12, 13]
