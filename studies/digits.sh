#!/usr/bin/env bash
# A data set that is not CIFAR-10: scikit-learn's bundled digits (8x8 gray, 10 classes, ~180 images
# per class, no network) written as one class-folder tree without splits, then the `cpu` study on
# three of its classes (3, 5, 8) at 32 px, kept gray (data.channels=1). A fixed 20% of each class is
# the test split (35-37 images); 100 train + 30 validation images per class leave ~9-14 unused.
#   bash studies/digits.sh single [WORK_DIR]   the `cpu` preset, one seed (its GAN: 200 epochs of
#                                              5 batches = 160 generator iterations)
#   bash studies/digits.sh seeds [WORK_DIR]    5 paired seeds, one shared GAN, at that budget and at
#                                              2400 epochs (1920 generator iterations: the CIFAR cpu budget)
#   SMOKE=1 bash studies/digits.sh single|seeds [WORK_DIR]   a check in seconds that the script still
#       runs (tests/test_scripts.py): the tiny preset at 20 train + 10 validation images per class,
#       2 seeds and a 4-epoch GAN for `seeds`; WORK_DIR a fresh temporary folder unless given, $OUT
#       (default WORK_DIR/results, never studies/results) and the tracking store in it
set -euo pipefail
MODE=${1:?single or seeds}
if [ "${SMOKE:-}" = 1 ]; then
  WORK=$(realpath -m "${2:-$(mktemp -d)}")
  OUT=$(realpath -m "${OUT:-$WORK/results}")
  # Its own store, whatever MLFLOW_TRACKING_URI says: a smoke run's studies belong in no real one.
  export MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db"
  PRESET=(--preset tiny --set data.n_per_class=20 --set data.val_per_class=10)
  SEEDS=2; LONG=(--set gan.epochs=4 --set gan.checkpoint_every=2 --set gan.sample_every=2)
else
  WORK=${2:-/tmp/digits-study}
  OUT=$(realpath -m "${OUT:-studies/results/digits}")
  PRESET=(--preset cpu --set data.n_per_class=100 --set data.val_per_class=30)
  SEEDS=5; LONG=(--set gan.epochs=2400 --set gan.checkpoint_every=200 --set gan.sample_every=200)
fi
mkdir -p "$WORK" "$OUT"
python3 - "$WORK/digits" <<'PY'
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

root = Path(sys.argv[1])
d = load_digits()
for i, (img, y) in enumerate(zip(d.images, d.target)):
    folder = root / str(y)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray((img * 255 / 16).round().astype(np.uint8), mode="L").save(folder / f"{i:04d}.png")
print(f"{len(d.images)} images in {root}: " + ", ".join(f"{c} {len(list((root / str(c)).iterdir()))}" for c in range(10)))
PY
cd "$WORK"
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$OLDPWD"
H=(python3 -m harness run "${PRESET[@]}" --data-dir digits --experiment digits --set data.classes=3,5,8
   --set data.channels=1)
if [ "$MODE" = single ]; then
  "${H[@]}" 2>"$OUT/single.log" | tee "$OUT/single.md"
else
  "${H[@]}" --seeds "$SEEDS" --share-generator 2>"$OUT/seeds-160.log" | tee "$OUT/seeds-160.md"
  "${H[@]}" --seeds "$SEEDS" --share-generator "${LONG[@]}" 2>"$OUT/seeds-1920.log" | tee "$OUT/seeds-1920.md"
fi
