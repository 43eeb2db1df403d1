#!/usr/bin/env bash
# Creates .venv and installs the project with a CPU build of torch (a GPU machine: install the
# CUDA torch and faiss-gpu first, then run this; pip keeps what is already there).
# Also refreshes Debian's package lists when the default corpus will need `apt-get download`.
# pip's own output goes to .venv/setup.log (shown in full if a step fails).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
LOG=.venv/setup.log
: > "$LOG"
quiet() { "$@" >>"$LOG" 2>&1 || { cat "$LOG" >&2; echo "setup failed: $*" >&2; return 1; }; }
quiet python -m pip install --quiet --upgrade pip
# scripts/install.py: pip's install through uv (seconds instead of a minute and a half), with pip's own
# configuration and pip itself as the fallback.
TORCH=()
if ! python -c "import torch" 2>/dev/null; then
  # 2.13.0 is the CPU wheel this project is tested with, taken from a local wheelhouse where pip has one configured.
  TORCH=("torch==2.13.0")
fi
# The test extras (browser driver, a local LLM server) by default; run_default.sh asks for none.
EXTRAS=${RETROFIT_SETUP_EXTRAS-test}
if ! quiet python scripts/install.py "${TORCH[@]}" -e ".${EXTRAS:+[$EXTRAS]}"; then
  [ ${#TORCH[@]} -gt 0 ] || exit 1  # torch from PyTorch's CPU index where no local wheel is configured
  quiet python scripts/install.py "torch==2.13.0" --index-url https://download.pytorch.org/whl/cpu
  quiet python scripts/install.py -e ".${EXTRAS:+[$EXTRAS]}"
fi
# The default corpus is built from Debian's man-page packages; apt-get download needs package lists.
if command -v apt-get >/dev/null && [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ]; then
  if [ "$(id -u)" = 0 ]; then apt-get update -qq; else echo "note: run 'sudo apt-get update' once so the default corpus can be downloaded"; fi
fi
echo "setup done: $(python -c 'import torch, dagster, transformers, faiss, mteb; print("torch", torch.__version__, "| dagster", dagster.__version__, "| transformers", transformers.__version__, "| faiss", faiss.__version__, "| mteb", mteb.__version__)')"
