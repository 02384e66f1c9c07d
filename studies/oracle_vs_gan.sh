#!/usr/bin/env bash
# The ceiling a perfect generator reaches at the reference data size, next to the GAN, at the
# `cpu` budget: 5 paired seeds, one shared generator, the same baselines for both arms (their
# cache keys do not depend on the generator). Writes the two study reports and the paired
# oracle-minus-GAN statistics to $OUT (default: studies/results).
#   bash studies/oracle_vs_gan.sh DATA_DIR
set -euo pipefail
DATA=${1:?give the CIFAR-10 class-folder tree}
OUT=${OUT:-studies/results}
mkdir -p "$OUT"
H="python3 -m harness"
$H run --preset cpu --seeds 5 --share-gan --data-dir "$DATA" --experiment oracle-vs-gan 2>"$OUT/gan.log" | tee "$OUT/gan.md"
$H run --preset cpu --seeds 5 --share-gan --data-dir "$DATA" --experiment oracle-vs-gan \
    --set generator.kind=oracle 2>"$OUT/oracle.log" | tee "$OUT/oracle.md"
python3 studies/export.py oracle-vs-gan "$OUT"
