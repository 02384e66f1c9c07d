#!/usr/bin/env bash
# Every generator kind at the reference data size and the `cpu` budget, 5 paired seeds, one shared
# generator, the same baselines for all arms (their cache keys do not depend on the generator):
# the GAN, the ceiling a perfect generator reaches (oracle: unused real images, labelled by the
# baseline like the GAN's, and with their true labels), and the trivial kinds (mixup, noise).
# Writes each study's report and the paired differences between arms to $OUT (default studies/results).
#   bash studies/generators.sh DATA_DIR
#   SMOKE=1 bash studies/generators.sh DATA_DIR   a check in seconds that the script still runs
#       (tests/test_scripts.py): the tiny preset, 2 seeds, 24 generated images, the gan and
#       oracle-true-labels arms only (between them every path of studies/export.py), a fresh tracking
#       store in a temporary folder, $OUT there too unless given (never studies/results)
set -euo pipefail
DATA=$(realpath "${1:?give the CIFAR-10 class-folder tree}")
ROOT=$(realpath "$(dirname "$0")/..")
if [ "${SMOKE:-}" = 1 ]; then
  WORK=$(mktemp -d)
  OUT=$(realpath -m "${OUT:-$WORK/results}")
  # Its own store, whatever MLFLOW_TRACKING_URI says: a smoke run's studies belong in no real one.
  export MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db"
  cd "$WORK"  # MLflow writes the runs' artifacts beside the working directory
  RUN=(--preset tiny --seeds 2 --set generate.n_samples=24)  # the oracle draws from 10 spare images per class
  ARMS=" gan oracle-true-labels "
else
  OUT=$(realpath -m "${OUT:-studies/results}")
  RUN=(--preset cpu --seeds 5)
  ARMS=""
fi
mkdir -p "$OUT"
study() {  # name, then --set overrides
  local name=$1; shift
  [ -z "$ARMS" ] || [[ "$ARMS" == *" $name "* ]] || return 0
  python3 -m harness run "${RUN[@]}" --share-generator --data-dir "$DATA" --experiment generators "$@" \
    2>"$OUT/$name.log" | tee "$OUT/$name.md"
}
study gan
study oracle --set generator.kind=oracle
study oracle-true-labels --set generator.kind=oracle --set pseudolabel.mode=none
study mixup --set generator.kind=mixup
study noise --set generator.kind=noise
python3 "$ROOT/studies/export.py" generators "$OUT"
