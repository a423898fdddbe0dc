#!/bin/bash
# screening: small seeded samples, every variant on the same users
cd /work/wt-reasons-gen
export RECGEN_DATA_DIR=/work/shared/data PYTHONPATH=/work/wt-reasons-gen OMP_NUM_THREADS=1
DS=$1; U=$2; shift 2
for v in "$@"; do
  cfg=eval/results/reasons/configs/${v%%+*}.json
  extra=""
  case $v in *+ft) extra="--adapter /work/artifacts/ml100k-joint/adapter";; esac
  nice -n 5 /work/main/.venv/bin/python -m recgen.cli.main eval reasons -d $DS --users $U --seed 0 --k 10 --variant $v --config $cfg --threads 1 $extra
done
