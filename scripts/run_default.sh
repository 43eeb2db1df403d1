#!/usr/bin/env bash
# One command: set up, then run the main job on the shipped offline default (CPU) and print the scores.
set -euo pipefail
cd "$(dirname "$0")/.."
RETROFIT_SETUP_EXTRAS= bash scripts/setup.sh  # the project alone: the test extras are the test command's
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
exec .venv/bin/retrofit run "$@"
