#!/usr/bin/env bash
# One grid study on this machine with two workers of one thread each (on 2 cores, two processes of one
# thread finish more items per hour than one of two), then its exported report, per-cell generator
# timings, sample quality and memorization (studies/export_grid.py) in $OUT (default studies/results/grid).
# The tracking store and the Optuna storage live in WORK_DIR; a rerun of the same command continues.
# Phases are reused within one MLflow experiment (default: the study's name): EXPERIMENT=<an earlier
# study's> makes a new study reuse the baselines and generators an earlier one computed.
#   bash studies/grid.sh STUDY DATA_DIR WORK_DIR -- GRID_ARGS...
# The grids of docs/results.md:
#   bash studies/grid.sh sb-diffusion ../shared/datasets/cifar10 /tmp/sb-diffusion -- --preset strong-baseline \
#       --axis data.n_per_class=100,300 --axis generator.kind=gan,diffusion,oracle --seeds 5 --set seeds.generators=1
#   bash studies/grid.sh sb-precision ../shared/datasets/cifar10 /tmp/sb-precision -- --preset strong-baseline \
#       --axis data.n_per_class=100,300,1000 --axis generator.kind=gan,oracle --seeds 5 --ci-halfwidth 1.0 \
#       --max-seeds 15 --set seeds.generators=3     (105 min here; docs/results.md)
# Issue 47's screen (100 per class; classifier.steps=1880, gan.iterations=4000, to fit a session) and its confirmation:
#   EXPERIMENT=s47 bash studies/grid.sh s47-screen ../shared/datasets/cifar10 /tmp/s47screen -- --preset strong-baseline \
#       --axis gan.init=scratch,pretrain --axis classifier.synthetic_use=mix,pretrain --axis generate.n_samples=1500,15000 \
#       --set data.n_per_class=100 --set gan.iterations=4000 --set classifier.steps=1880 --set seeds.generators=3 --seeds 3
#   EXPERIMENT=s47 bash studies/grid.sh s47-confirm ../shared/datasets/cifar10 /tmp/s47confirm -- \
#       --confirm studies/results/grid/s47-screen.json --top 2 --seeds 5 --ci-halfwidth 1.0 --max-seeds 15 \
#       --oracle-ladder 1500   (84 min here; from the committed export, so any store will do)
# A check in seconds that the script still runs (tests/test_scripts.py; no GRID_ARGS: one seed of a
# tiny GAN cell and a tiny oracle cell of 24 images each; $OUT defaults to WORK_DIR/results, never
# studies/results):
#   SMOKE=1 bash studies/grid.sh smoke DATA_DIR WORK_DIR
set -euo pipefail
STUDY=${1:?study name}; DATA=$(realpath "${2:?data dir}"); WORK=$(realpath -m "${3:?work dir}")
shift 3; [ "${1:-}" = "--" ] && shift
EXPERIMENT=${EXPERIMENT:-$STUDY}
if [ "${SMOKE:-}" = 1 ]; then
  OUT=$(realpath -m "${OUT:-$WORK/results}")
  # The oracle draws unused real images: 24 fit a folder of a few dozen per class.
  [ $# -gt 0 ] || set -- --preset tiny --axis generator.kind=gan,oracle --seeds 1 --set generate.n_samples=24
else
  OUT=$(realpath -m "${OUT:-studies/results/grid}")
fi
ROOT=$(realpath "$(dirname "$0")/..")
# The grid runs in WORK: a path among GRID_ARGS (--confirm screen.json) is read from where you typed it.
args=()
for a in "$@"; do
  if [[ "$a" == */* || "$a" == *.json ]] && [ -e "$a" ]; then args+=("$(realpath "$a")"); else args+=("$a"); fi
done
set -- "${args[@]}"
mkdir -p "$WORK" "$OUT"
export MLFLOW_TRACKING_URI="sqlite:///$WORK/mlflow.db"
cd "$WORK"
start=$(date +%s)
harness grid "$@" --data-dir "$DATA" --study "$STUDY" --experiment "$EXPERIMENT" --threads 1 --plan-only
harness worker --study "$STUDY" --data-dir "$DATA" --experiment "$EXPERIMENT" --threads 1 2>"$WORK/worker-1.log" &
one=$!
harness worker --study "$STUDY" --data-dir "$DATA" --experiment "$EXPERIMENT" --threads 1 2>"$WORK/worker-2.log"
wait $one
echo "grid $STUDY: $(( ($(date +%s) - start) / 60 )) min of wall time on $(nproc) cores" | tee "$OUT/$STUDY.time.txt"
python3 "$ROOT/studies/export_grid.py" "$STUDY" "sqlite:///$WORK/optuna.db" "$OUT" --data-dir "$DATA"
