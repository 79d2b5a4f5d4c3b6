#!/usr/bin/env bash
# One check of xmodal's CUDA path on a lent GPU (H100/H200 class), offline, in under 8 minutes:
#   1. makes the project importable with the GPU machine's own torch (no network: missing packages come from
#      wheels in .whl/ at the repository root, fetched beforehand with `benchmarks/gpu_check.sh --fetch-wheels`
#      on a machine with registry access; faiss-gpu-cu12 also needs CUDA 12 cuBLAS/cudart, see README);
#   2. runs the tests marked `gpu`;
#   3. measures (benchmarks/gpu_check.py) and writes benchmarks/results/gpu.json, printing a table.
# Usage: benchmarks/gpu_check.sh [--cpu-smoke | --fetch-wheels]
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
wheels="$root/.whl"
site="${XMODAL_GPU_SITE:-/tmp/xmodal-gpu-site}"
# Packages the project imports that a CUDA image with torch, torchvision, transformers and pytest lacks.
needed=(open-clip-torch==3.3.0 ftfy wcwidth sqlalchemy greenlet alembic mako pydantic pydantic-core annotated-types
  typing-inspection pydantic-settings python-dotenv filetype jellyfish fastapi starlette uvicorn python-multipart
  faiss-gpu-cu12)

if [[ "${1:-}" == "--fetch-wheels" ]]; then
  mkdir -p "$wheels"
  "$python" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$wheels" "${needed[@]}"
  exit 0
fi

mode=()
if [[ "${1:-}" == "--cpu-smoke" ]]; then
  mode=(--cpu-smoke)
fi

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
if compgen -G "$wheels/*.whl" >/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$wheels"/*.whl
  export PYTHONPATH="$root/src:$site:$root${PYTHONPATH:+:$PYTHONPATH}"
else
  export PYTHONPATH="$root/src:$root${PYTHONPATH:+:$PYTHONPATH}"
fi

"$python" - <<'PY'
import faiss, torch
print(f"torch {torch.__version__}, CUDA {torch.cuda.is_available()}"
      f" ({torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}),"
      f" faiss {faiss.__version__} with {faiss.get_num_gpus() if hasattr(faiss, 'StandardGpuResources') else 0} GPU(s)")
PY

started=$SECONDS
if [[ ${#mode[@]} -eq 0 ]]; then
  timeout 180 "$python" -m pytest -m gpu tests/gpu -q -rs -p no:cacheprovider || echo "gpu tests FAILED (see above)"
fi
timeout 360 "$python" benchmarks/gpu_check.py "${mode[@]}"
echo "gpu_check.sh took $((SECONDS - started)) s"
