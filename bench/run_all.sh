#!/usr/bin/env bash
# Every benchmark of docs/BENCHMARKS.md, one after the other, each printing its ratio against the
# peer measured in the same run. Needs the default corpus's raw pairs (the first step of
# `bash scripts/run_default.sh`, or `dagster asset materialize --select raw_corpora,evaluation_set`).
# On a machine with a GPU the GPU rows are added (device cuda, bf16, MFU of an xlm-roberta-base shape).
# Takes about 25 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
.venv/bin/python -m pip install --quiet -e ".[bench]"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
run() { echo "== $*" >&2; .venv/bin/python "$@" 2>/dev/null; }

run bench/encode_throughput.py --passages 1000
run bench/checkpoint_scoring.py --passages 1000   # needs the default's 2k checkpoint (scripts/run_default.sh)
run bench/mining.py --pool-sizes 100000 1000000
run bench/dedup.py --rows 1000000 --baseline-rows 100000
run bench/training_throughput.py --steps 16
run bench/training_throughput.py --steps 16 --mini-batch-size 8
run bench/training_throughput.py --large-batch --max-length 32 --steps 1
if .venv/bin/python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  run bench/encode_throughput.py --passages 20000 --batch-size 256 --device cuda   # also against the peer in bf16
  run bench/training_throughput.py --device cuda --batch-size 256 --negatives 7 --steps 20 --precision bf16
  run bench/training_throughput.py --device cuda --large-batch
  for seq in 128 256; do   # MFU levers, one at a time: checkpointing, regional compile, frozen embeddings
    run bench/train_mfu.py --device cuda --batch-size 256 --negatives 7 --seq-len $seq --checkpointing off
    run bench/train_mfu.py --device cuda --batch-size 256 --negatives 7 --seq-len $seq --checkpointing off --compile-layers
    run bench/train_mfu.py --device cuda --batch-size 256 --negatives 7 --seq-len $seq --checkpointing off --compile-layers --freeze-embeddings
    run bench/train_mfu.py --device cuda --batch-size 256 --negatives 7 --seq-len $seq --checkpointing on
  done
fi
