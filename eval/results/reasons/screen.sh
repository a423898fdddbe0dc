#!/bin/bash
# Screening (issue 14): every variant on the same seeded users of one dataset.
#   eval/results/reasons/screen.sh DATASET USERS TAG VARIANT...
# VARIANT = free | facts | grounded, "+ft" = with the joint ml-100k adapter; runs are named VARIANT-TAG.
cd "$(dirname "$0")/../../.."
export RECGEN_DATA_DIR=${RECGEN_DATA_DIR:-/work/shared/data} PYTHONPATH=$PWD OMP_NUM_THREADS=1
DS=$1; U=$2; TAG=$3; shift 3
for v in "$@"; do
  cfg=eval/results/reasons/configs/${v%%+*}.json
  extra=()
  case $v in *+ft) extra=(--adapter /work/artifacts/ml100k-joint/adapter);; esac
  nice -n 5 /work/main/.venv/bin/python -m recgen.cli.main eval reasons -d "$DS" --users "$U" --seed 0 --k 10 \
    --variant "$v-$TAG" --config "$cfg" --threads 1 "${extra[@]}"
done
