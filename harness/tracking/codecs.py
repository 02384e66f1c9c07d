"""Artifacts in and out of the active run: tensors (torch.save / weights_only load), pickle-free
LoggedModels, arrays (.npz), image grids and series, JSON and figures."""
from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path

import mlflow


def _log_file(write, path: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / Path(path).name
        write(target)
        parent = str(Path(path).parent)
        mlflow.log_artifact(str(target), artifact_path=None if parent == "." else parent)


def download(run_id: str, path: str) -> str:
    return mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=path, dst_path=tempfile.mkdtemp(prefix="harness-"))


def tensors_digest(named) -> str:
    """A hash (hex) of (name, tensor) pairs, sorted by name: their names, shapes and values. What stands
    for weights read from outside in a key (classifier.init, gan.init), never their path."""
    import hashlib

    import torch
    h = hashlib.sha256()
    for name, tensor in sorted(named, key=lambda nt: nt[0]):
        h.update(name.encode() + b"\0" + str(tuple(tensor.shape)).encode() + b"\0")
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return h.hexdigest()


def log_torch(obj, path: str) -> None:
    """torch.save an object (a state dict + the config that made it) as an artifact."""
    import torch
    _log_file(lambda target: torch.save(obj, target), path)


def log_pytorch_model(model, name: str, example, step: int = 0, params: dict | None = None) -> str:
    """An MLflow LoggedModel of `model` on the active run, in the pickle-free pt2 format (torch.export,
    so loading it runs no pickle from a store the user may not control); returns its model id.
    Requirements are given, so that MLflow runs no requirement-inference subprocess per model."""
    import copy
    import os
    import warnings

    import mlflow.pytorch
    import torch
    # Exported on the CPU, so that it loads on any machine (`mlflow.pytorch.load_model`). MLflow checks
    # the input example through pyfunc, which would pick CUDA where there is one and refuse a CPU
    # export: that check runs on the CPU too.
    module = copy.deepcopy(model).cpu().eval().to(memory_format=torch.contiguous_format)
    example = example.cpu().numpy() if hasattr(example, "numpy") else example
    previous = os.environ.get("MLFLOW_DEFAULT_PREDICTION_DEVICE")
    os.environ["MLFLOW_DEFAULT_PREDICTION_DEVICE"] = "cpu"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # validate_serving_input=False: MLflow would load the exported program back through pyfunc and
            # run the example, ~0.3 s a model, a quarter of logging one (tests/test_baseline.py,
            # test_generators.py and test_pipeline.py load each kind's back and run it).
            info = mlflow.pytorch.log_model(module, name=name, input_example=example, step=step, params=params,
                                            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                                            serialization_format="pt2", validate_serving_input=False)
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_DEFAULT_PREDICTION_DEVICE")
        else:
            os.environ["MLFLOW_DEFAULT_PREDICTION_DEVICE"] = previous
    return info.model_id


def load_torch(run_id: str, path: str):
    """torch.load of an artifact; a truncated or corrupt file (a full disk, a killed upload) is named
    in one line instead of a torch traceback."""
    import torch

    from harness.errors import HarnessError
    local = download(run_id, path)
    try:
        return torch.load(local, map_location="cpu", weights_only=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise HarnessError(f"{path} of run {run_id} is unreadable, a truncated or corrupt file ({first})") from None


def log_npz(path: str, **arrays) -> None:
    import numpy as np
    # Uncompressed: generated images barely compress (2.3x) and zlib costs ~0.3 s per 1000 images.
    _log_file(lambda target: np.savez(target, **arrays), path)


def load_npz(run_id: str, path: str) -> dict:
    import numpy as np
    with np.load(download(run_id, path)) as f:
        return {k: f[k] for k in f.files}


def log_image_grid(images_uint8, path: str | None = None, nrow: int = 8, key: str | None = None,
                   step: int | None = None) -> None:
    """A grid of uint8 [N, C, H, W] images: a PNG artifact at `path`, or an image series under `key`
    with a `step` (the run page then shows it with a step slider)."""
    from torchvision.utils import make_grid
    if len(images_uint8) == 0:
        return
    grid = make_grid(images_uint8, nrow=nrow, padding=2, pad_value=255).permute(1, 2, 0).numpy()
    if key is not None:
        mlflow.log_image(grid, key=key, step=step or 0, synchronous=True)
    else:
        mlflow.log_image(grid, path)


def log_figure(fig, path: str, run_id: str | None = None, client=None) -> None:
    """To the active run, or to `run_id` through the store's `client`."""
    import matplotlib.pyplot as plt

    from harness.figures import readable
    readable(fig)
    if run_id is None:
        mlflow.log_figure(fig, path)
    else:
        client.log_figure(run_id, fig, path)
    plt.close(fig)


def series_name(name: str, index: int) -> str:
    """An image series key part for a class: MLflow takes ASCII letters, digits, _ - . / and spaces
    there (its metric keys take any script); other names become their class index."""
    return name if re.fullmatch(r"[A-Za-z0-9_\-. /]+", name) else f"class{index}"


NON_FINITE = {float("inf"): "infinity", float("-inf"): "minus infinity"}


def strict(obj):
    """`obj` with every non-finite float made JSON's null (RFC 8259 has no Infinity or NaN; a browser's
    JSON.parse, jq and MLflow's artifact viewer reject the whole file for one): a dict's non-finite value
    `k` becomes null beside `k_words` saying what it was ("minus infinity", "infinity", "not a number")."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out[k] = strict(v)
            if out[k] is None and v is not None:
                out[f"{k}_words"] = NON_FINITE.get(v, "not a number")
        return out
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj, **kwargs) -> str:
    """Strict JSON (`strict`), as every JSON the harness writes, artifacts and exports alike."""
    return json.dumps(strict(obj), allow_nan=False, **kwargs)


def log_json(obj, path: str) -> None:
    mlflow.log_text(dumps(obj, indent=2, sort_keys=True), path)


def log_class_grid(images_uint8, labels, classes, path: str, per_class: int = 8) -> None:
    """A grid with one row per class, its name beside it: up to `per_class` images of each."""
    from harness.figures import subplots, wrap
    # Indices first: a boolean mask would copy every image of the class (all of a 50,000-image draw).
    rows = [(name, images_uint8[(labels == i).nonzero().flatten()[:per_class]]) for i, name in enumerate(classes)]
    rows = [(name, x) for name, x in rows if len(x)]
    if not rows:
        return
    fig, axes = subplots(len(rows), per_class, figsize=(1.1 * per_class + 1.6, 1.1 * len(rows) + 0.1), squeeze=False)
    fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.02, hspace=0.02)  # the images nearly touch
    for r, (name, x) in enumerate(rows):
        for c in range(per_class):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if c < len(x):
                img = x[c].permute(1, 2, 0).numpy()
                ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=255)
        axes[r][0].set_ylabel(wrap(name, 14), rotation=0, ha="right", va="center", fontsize=10)
    log_figure(fig, path)
