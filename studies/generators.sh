#!/usr/bin/env bash
# Every generator kind at the reference data size and the `cpu` budget, 5 paired seeds, one shared
# generator, the same baselines for all arms (their cache keys do not depend on the generator):
# the GAN, the ceiling a perfect generator reaches (oracle: unused real images, labelled by the
# baseline like the GAN's, and with their true labels), and the trivial kinds (mixup, noise).
# Writes each study's report and the paired differences between arms to $OUT (default studies/results).
#   bash studies/generators.sh DATA_DIR
set -euo pipefail
DATA=${1:?give the CIFAR-10 class-folder tree}
OUT=${OUT:-studies/results}
mkdir -p "$OUT"
study() {  # name, then --set overrides
  local name=$1; shift
  python3 -m harness run --preset cpu --seeds 5 --share-generator --data-dir "$DATA" --experiment generators "$@" \
    2>"$OUT/$name.log" | tee "$OUT/$name.md"
}
study gan
study oracle --set generator.kind=oracle
study oracle-true-labels --set generator.kind=oracle --set pseudolabel.mode=none
study mixup --set generator.kind=mixup
study noise --set generator.kind=noise
python3 studies/export.py generators "$OUT"
