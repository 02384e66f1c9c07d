"""Artifacts in and out of the active run: tensors (torch.save / weights_only load), arrays (.npz),
image grids, JSON, CSV text and figures."""
from __future__ import annotations

import io
import json
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


def log_torch(obj, path: str) -> None:
    """torch.save an object (a state dict + the config that made it) as an artifact."""
    import torch
    _log_file(lambda target: torch.save(obj, target), path)


def load_torch(run_id: str, path: str):
    import torch
    return torch.load(download(run_id, path), map_location="cpu", weights_only=True)


def log_npz(path: str, **arrays) -> None:
    import numpy as np
    # Uncompressed: generated images barely compress (2.3x) and zlib costs ~0.3 s per 1000 images.
    _log_file(lambda target: np.savez(target, **arrays), path)


def load_npz(run_id: str, path: str) -> dict:
    import numpy as np
    with np.load(download(run_id, path)) as f:
        return {k: f[k] for k in f.files}


def log_image_grid(images_uint8, path: str, nrow: int = 8) -> None:
    """A grid of uint8 [N, C, H, W] images as a PNG artifact."""
    from torchvision.utils import make_grid
    if len(images_uint8) == 0:
        return
    grid = make_grid(images_uint8, nrow=nrow, padding=2, pad_value=255)
    mlflow.log_image(grid.permute(1, 2, 0).numpy(), path)


def log_figure(fig, path: str) -> None:
    import matplotlib.pyplot as plt
    mlflow.log_figure(fig, path)
    plt.close(fig)


def csv_text(header: list[str], rows) -> str:
    buf = io.StringIO()
    buf.write(",".join(header) + "\n")
    for row in rows:
        buf.write(",".join(str(v) for v in row) + "\n")
    return buf.getvalue()


def log_json(obj, path: str) -> None:
    mlflow.log_text(json.dumps(obj, indent=2, sort_keys=True), path)
