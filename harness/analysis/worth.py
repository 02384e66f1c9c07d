"""The exchange rate: what synthetic images are worth in real ones, read on the oracle's curve (the
paired delta of a generator that draws unused real training images, against how many it adds)."""
from __future__ import annotations

LESS_THAN_NOTHING, MORE_THAN_TOP = float("-inf"), float("inf")


def oracle_curve(rungs: list[int], means: list[float]):
    """The oracle's mean paired delta (points) against real images added, made monotone (isotonic
    regression) and read between rungs linearly. It starts at the rung of 0 images added where one
    was measured (the `replay` control: the synthetic arm's recipe on the training images themselves,
    which is not the baseline: its batches are larger), else at (0, 0)."""
    import numpy as np
    from scipy.optimize import isotonic_regression  # ~100x sklearn's per call: a bootstrap calls it thousands of times
    measured = bool(rungs) and rungs[0] == 0
    x = np.array(rungs if measured else [0, *rungs], dtype=float)
    y = np.array(means if measured else [0.0, *means])
    w = np.array([1.0] * len(rungs) if measured else [1e6, *([1.0] * len(rungs))])  # unmeasured: (0, 0) exactly
    return x, isotonic_regression(y, weights=w, increasing=True).x


def real_images(delta: float, x, fx) -> float:
    """The fewest real images whose oracle delta reaches `delta` (points): LESS_THAN_NOTHING below the
    curve's start (0, or the replay control's delta), MORE_THAN_TOP beyond the top rung (never an
    extrapolated number)."""
    if delta < fx[0]:
        return LESS_THAN_NOTHING
    if delta > fx[-1]:
        return MORE_THAN_TOP
    i = int(next(j for j in range(len(fx)) if fx[j] >= delta))
    if i == 0 or fx[i] == fx[i - 1]:
        return float(x[i])
    return float(x[i - 1] + (delta - fx[i - 1]) / (fx[i] - fx[i - 1]) * (x[i] - x[i - 1]))


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict:
    """Mean of a - b (points) over the seeds both have, with its 95% t interval: two cells' deltas
    against the same baselines, so the baselines' luck cancels."""
    import numpy as np
    from scipy import stats as st
    seeds = sorted(set(a) & set(b))
    d = 100 * np.array([a[s] - b[s] for s in seeds])
    if len(d) < 2:
        return {"seeds": len(d), "mean": float(d.mean()) if len(d) else None, "low": None, "high": None}
    half = float(st.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return {"seeds": len(d), "mean": float(d.mean()), "low": float(d.mean()) - half, "high": float(d.mean()) + half}


def worth(oracle: dict[int, dict[int, float]], cell: dict[int, float], boot: int = 2000, seed: int = 0) -> dict:
    """What a generator cell's images are worth in real images: its mean paired delta placed on the
    oracle's curve of the same data size (`oracle`: rung -> seed -> delta; `cell`: seed -> delta,
    accuracy fractions), with a 95% interval from a paired bootstrap over the seeds every one of them
    has (resampled jointly, so each seed's pairing with its baseline is kept)."""
    import numpy as np
    rungs = sorted(oracle)
    seeds = sorted(set(cell).intersection(*(set(oracle[r]) for r in rungs)))
    if len(seeds) < 2 or not rungs:
        return {"seeds": len(seeds), "real_images": None}
    o = 100 * np.array([[oracle[r][s] for s in seeds] for r in rungs])  # rungs x seeds, points
    c = 100 * np.array([cell[s] for s in seeds])
    x, fx = oracle_curve(rungs, list(o.mean(1)))
    point = real_images(float(c.mean()), x, fx)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(boot):
        idx = rng.integers(0, len(seeds), len(seeds))
        bx, bfx = oracle_curve(rungs, list(o[:, idx].mean(1)))
        draws.append(real_images(float(c[idx].mean()), bx, bfx))
    low, high = (float(np.percentile(draws, q, method="inverted_cdf")) for q in (2.5, 97.5))
    return {"seeds": len(seeds), "real_images": point, "low": low, "high": high, "top": rungs[-1],
            "oracle_points": [float(v) for v in fx[len(x) - len(rungs):]], "rungs": rungs,
            "curve": [[float(a), float(b)] for a, b in zip(x, fx)], "delta_points": float(c.mean())}


def worth_words(w: dict, n_images: int | None = None, kind: str = "") -> str:
    """"1,500 gan images = 210 real images [80, 390]"; "worth less than nothing"; "more than 1,500"."""
    def one(v):
        if v == LESS_THAN_NOTHING:
            return "less than nothing"
        if v == MORE_THAN_TOP:
            return f"more than {w['top']:,}"
        return f"{v:,.0f}"
    if w.get("real_images") is None:
        return f"not measurable ({w.get('seeds', 0)} seeds shared with every oracle rung; 2 needed)"
    what = f"{n_images:,} {kind} images = ".lstrip() if n_images else ""
    v = w["real_images"]
    head = "worth less than nothing" if v == LESS_THAN_NOTHING else (
        f"more than {w['top']:,} real images" if v == MORE_THAN_TOP else f"{v:,.0f} real images")
    if w["low"] == w["high"] and w["low"] in (LESS_THAN_NOTHING, MORE_THAN_TOP):  # the whole interval past one end
        return f"{what}{head} (the whole 95% interval too)"
    return f"{what}{head} [{one(w['low'])}, {one(w['high'])}]"
