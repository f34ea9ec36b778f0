#!/usr/bin/env bash
# GPU records: mnistkit's speed presets, prediction and the server on a CUDA GPU, as JSON in the folder $OUT,
# in at most 8 minutes.
#
#   benchmarks/gpu.sh fetch           here, where pip reaches a registry: the wheels the GPU machine lacks, into wheels/
#   OUT=DIR benchmarks/gpu.sh         on the GPU machine: install them and mnistkit, then measure
#   OUT=DIR benchmarks/gpu.sh install (or run): only one of those two halves
#
# The GPU machine reaches no package registry. Its python3 holds a CUDA build of PyTorch and common packages
# (numpy, pillow, matplotlib, rich, safetensors, anyio, click, h11, aiohttp, pytest) but not the web stack listed
# in MISSING, which travels as wheels in wheels/ (ignored by git: carry it). The measurements run in order of
# importance, each under `timeout` with what is left of the GPU_SH_SECONDS budget: a slow step costs the steps
# after it, which $OUT/gpu.json then marks skipped, never the whole record. $OUT/gpu.log has every step's log.
#
# Rehearsal on a CPU, every step and command line as on the GPU with tiny settings:
#   GPU_SH_DEVICE=cpu GPU_SH_QUICK=1 GPU_SH_PYTHON=.venv/bin/python OUT=/tmp/gpu benchmarks/gpu.sh run
set -uo pipefail
cd "$(dirname "$0")/.."

PY=${GPU_SH_PYTHON:-python3}
DEVICE=${GPU_SH_DEVICE:-cuda}
QUICK=${GPU_SH_QUICK:-0}
BUDGET=${GPU_SH_SECONDS:-470}  # seconds from the start of this script
SITE=${GPU_SH_SITE:-/tmp/mnistkit-site}  # where the wheels are installed (put first on PYTHONPATH)
WHEELS=wheels
# mnistkit's dependencies (and theirs) that the GPU machine's python3 lacks; typing-extensions for a recent one.
MISSING="fastapi starlette pydantic pydantic-core annotated-types typing-inspection typing-extensions uvicorn
python-multipart fastapi-offline platformdirs opentelemetry-api"
export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

fetch() {
  # The versions this Python has (where the tests pass), as wheels for the GPU machine's CPython 3.12 on x86-64.
  local pins
  pins=$("$PY" -c 'import importlib.metadata as m, sys; print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' \
    $MISSING) || exit 1
  rm -rf "$WHEELS" && mkdir -p "$WHEELS" || exit 1
  # shellcheck disable=SC2086  # one argument per pin
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHEELS" $pins || exit 1
  ls "$WHEELS"
}

install() {
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "gpu.sh: no wheels in $WHEELS/; run benchmarks/gpu.sh fetch where pip reaches a registry, and carry $WHEELS" >&2
    exit 2
  fi
  "$PY" -m pip install --quiet --no-index --find-links "$WHEELS" --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl || exit 1
  # The `mnistkit` command; without it everything below still runs mnistkit from src/ on PYTHONPATH.
  "$PY" -m pip install --quiet --no-index --no-deps --no-build-isolation -e . \
    || echo "gpu.sh: the editable install failed; mnistkit runs from src/ on PYTHONPATH" >&2
  "$PY" -c "import fastapi, fastapi_offline, platformdirs, python_multipart, uvicorn, mnistkit.server" || exit 1
}

device_info() {
  "$PY" - "$DEVICE" "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" <<'EOF'
import json, os, platform, shutil, subprocess, sys

import torch

import mnistkit

device, commit = sys.argv[1:]
cuda = torch.cuda.is_available()
smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout if shutil.which("nvidia-smi") else ""
info = {
    "nvidia_smi": smi.strip() or None,
    "device": torch.cuda.get_device_name(0) if cuda else platform.processor() or platform.machine(),
    "capability": torch.cuda.get_device_capability(0) if cuda else None,
    "torch": torch.__version__,
    "cuda": torch.version.cuda,
    "cudnn": torch.backends.cudnn.version() if cuda else None,
    "python": platform.python_version(),
    "cpu_count": os.cpu_count(),
    "mnistkit": mnistkit.__version__,
    "commit": commit,
}
print(smi.strip() or "no nvidia-smi", file=sys.stderr)
print(f"device: {info['device']}; torch {info['torch']}, CUDA {info['cuda']}, cuDNN {info['cudnn']}", file=sys.stderr)
print(json.dumps(info))
sys.exit(1 if device == "cuda" and not cuda else 0)
EOF
}
export -f device_info
export PY DEVICE

step() {  # step NAME CAP COMMAND...: COMMAND's stdout to NAME.out, within CAP seconds and what is left of the budget
  local name=$1 cap=$2 left limit code began=$SECONDS
  shift 2
  left=$((BUDGET - SECONDS))
  limit=$((cap < left ? cap : left))
  printf '\n== %s (at %s s, limit %s s): %s\n' "$name" "$SECONDS" "$limit" "$*" | tee -a "$LOG" >&2
  if ((limit < 20)); then
    code=skipped
  else
    timeout --kill-after=10 "$limit" "$@" >"$STEPS/$name.out" 2> >(tee -a "$LOG" >&2)
    code=$?
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$code" "$((SECONDS - began))" "$limit" "$*" >>"$STEPS/steps.tsv"
  "$PY" benchmarks/gpu_report.py "$STEPS" "$OUT/gpu.json" >/dev/null
  [ "$code" = 0 ]
}

run() {
  local five="fast cnn accurate" one="best" seeds=5 preset
  local predict=() serve=(--seconds 15) rate=2000
  if [ "$QUICK" = 1 ]; then
    five="fast" one="cnn" seeds=1 predict=(--repeats 1 --singles 20 --threads 1) serve=(--seconds 3 --clients 8) rate=50
  fi
  local bench=("$PY" -m mnistkit bench --device "$DEVICE" --against none --json)
  step device 60 bash -c device_info || { echo "gpu.sh: no $DEVICE device to measure on; see $LOG" >&2 && exit 1; }
  for preset in $five; do step "bench-$preset" 150 "${bench[@]}" --preset "$preset" --seeds "$seeds"; done
  for preset in $one; do step "bench-$preset" 240 "${bench[@]}" --preset "$preset" --seeds 1; done
  step gpu-test 90 "$PY" -m pytest -q -p no:cacheprovider tests/test_inference.py -k gpu
  step predict 120 "$PY" benchmarks/bench_predict.py --device "$DEVICE" --json "${predict[@]}"
  step serve 60 "$PY" benchmarks/load_server.py --device "$DEVICE" --json "${serve[@]}"
  step "serve-rate$rate" 60 "$PY" benchmarks/load_server.py --device "$DEVICE" --json --rate "$rate" "${serve[@]}"
  for preset in $five; do step "compile-$preset" 200 "${bench[@]}" --compile --preset "$preset" --seeds "$seeds"; done
  for preset in $one; do step "compile-$preset" 240 "${bench[@]}" --compile --preset "$preset" --seeds 1; done
  "$PY" benchmarks/gpu_report.py "$STEPS" "$OUT/gpu.json" | tee -a "$LOG"
}

case "${1:-all}" in
  fetch) PY=${GPU_SH_PYTHON:-.venv/bin/python} && fetch && exit 0 ;;
  install | run | all) ;;
  *) echo "gpu.sh: unknown command '$1'; use fetch, install, run, or nothing (install, then run)" >&2 && exit 2 ;;
esac
: "${OUT:?gpu.sh: set OUT to the folder for the results}"
mkdir -p "$OUT" || exit 1
STEPS=$(mktemp -d) LOG="$OUT/gpu.log"
case "${1:-all}" in
  install) install ;;
  run) run ;;
  all) install && run ;;
esac
