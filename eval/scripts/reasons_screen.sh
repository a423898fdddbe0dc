#!/bin/bash
# Screening (issue 14): every variant on the same seeded users of one dataset.
#   eval/scripts/reasons_screen.sh DATASET USERS TAG VARIANT...
# VARIANT = free | facts | grounded, "+ft" = with a LoRA adapter (the folder in $ADAPTER, e.g. the joint ml-100k
# adapter `recgen finetune` wrote); runs are named VARIANT-TAG. Python: $PYTHON (default .venv/bin/python);
# datasets: RECGEN_DATA_DIR (default ../shared/data, as recgen looks).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
PYTHON=${PYTHON:-.venv/bin/python}
DS=$1; U=$2; TAG=$3; shift 3
for v in "$@"; do
  cfg=eval/results/reasons/configs/${v%%+*}.json
  extra=()
  case $v in *+ft) extra=(--adapter "${ADAPTER:?set ADAPTER to the LoRA adapter folder for +ft variants}");; esac
  nice -n 5 "$PYTHON" -m recgen.cli.main eval reasons -d "$DS" --users "$U" --seed 0 --k 10 \
    --variant "$v-$TAG" --config "$cfg" --threads 1 "${extra[@]}"
done
