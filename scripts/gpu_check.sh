#!/usr/bin/env bash
# Our engine on a GPU, in under 10 minutes: the CUDA tests, then the serve benchmark on the GPU.
#   bash scripts/setup.sh --dev && bash scripts/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi -L
.venv/bin/python -c "import torch; assert torch.cuda.is_available(), 'this torch has no CUDA: pip install torch (a CUDA build) into .venv'"
.venv/bin/python -m pytest -q tests/test_cuda.py
.venv/bin/python -m benchmarks serve --device cuda --repeats 1 --json
