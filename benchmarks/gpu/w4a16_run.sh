#!/usr/bin/env bash
# The recorded NVFP4 / W4A16 GPU runs. PARTS picks what runs (default: all, in this order):
#   tests  GPU tests of the kernels, the NVFP4 example served on the GPU, modelopt's fake-quant comparison
#   probe  the example's served record (example/report.json)
#   bench  benchmarks/w4a16.py (extra arguments are passed on, e.g. --quick --sweep)
#   model  benchmarks/w4a16_model.py (whole-model decode at realistic widths)
#   split  benchmarks/gpu/w4a16_decode_kernels.py at M = 1: GEMV tiles x split K, partials summed by a second
#          launch and in the same launch (workspace), and the read floor of each shape (not in the default PARTS)
#   PARTS="tests probe bench" bash benchmarks/gpu/w4a16_run.sh OUT [benchmark args]
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${1:-gpu-out}"; shift || true
parts="${PARTS:-tests probe bench model}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$out/nvidia-smi.csv" 2>&1
site=""
if ls .whl/*.whl > /dev/null 2>&1; then  # nvidia-modelopt and its missing dependencies, carried as wheels
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && site=/tmp/site
fi
if [[ " $parts " == *" tests "* ]]; then
  PYTHONPATH=src:$site HYBRIDLOAD_DISABLE=1 timeout ${TESTS_TIMEOUT:-150} python3 -m pytest -q -p no:cacheprovider \
    --import-mode=importlib tests/quant/test_w4a16_gpu.py tests/quant/test_example_gpu.py tests/quant/test_modelopt_parity.py \
    -rfEs 2>&1 | tail -n 60 > "$out/gpu-tests.log"
  tail -n 3 "$out/gpu-tests.log"
fi
if [[ " $parts " == *" probe "* ]]; then
  PYTHONPATH=tests/fakekernels:src HYBRIDLOAD_DISABLE=1 timeout 60 python3 tests/quant/example_probe.py cuda "$out/example" \
    > "$out/example.log" 2>&1; echo "example probe rc=$?"
fi
if [[ " $parts " == *" bench "* ]]; then
  PYTHONPATH=src HYBRIDLOAD_DISABLE=1 timeout ${BENCH_TIMEOUT:-210} python3 benchmarks/w4a16.py --out "$out/w4a16-h100.json" "$@" \
    2>&1 | tee "$out/w4a16.log"
fi
if [[ " $parts " == *" model "* ]]; then
  PYTHONPATH=tests/fakekernels:src HYBRIDLOAD_DISABLE=1 timeout ${MODEL_TIMEOUT:-150} python3 benchmarks/w4a16_model.py \
    --out "$out/w4a16-model-h100.json" 2>&1 | tail -n 30 > "$out/w4a16-model.log"; tail -n 5 "$out/w4a16-model.log"
fi
if [[ " $parts " == *" split "* ]]; then
  PYTHONPATH=src HYBRIDLOAD_DISABLE=1 timeout ${SPLIT_TIMEOUT:-400} python3 benchmarks/gpu/w4a16_decode_kernels.py \
    --out "$out/w4a16-decode-split-h100.json" --ms 1 --kernels gemv --no-moe --gemv 2,6,7,8 --serial 0,1 --read-floor \
    --shapes 4096x4096,21504x4096,4096x21504,1856x2688,2688x1856,4096x14336 2>&1 | tee "$out/w4a16-decode-split.log"
fi
