#!/usr/bin/env bash
# Style gates: rustfmt and clippy (-D warnings) over the host (all targets)
# and every guest crate (wasm32-wasip2). .ci/run runs this before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '==> %s\n' "$*" >&2; }
step "cargo fmt --check"
cargo fmt --all --check
step "clippy: host (all targets)"
cargo clippy --release --quiet -p host --all-targets -- -D warnings
step "clippy: skills (wasm32-wasip2)"
cargo clippy --release --quiet --target wasm32-wasip2 -p skill-sdk -p text-embedding -p fill-mask \
  -p text-classification -p token-classification -p image-classification -p zero-shot-image-classification -p zero-shot-audio-classification -p object-detection -p multimodal-embedding -p text-generation -p text2text-generation -p video-classification -p audio-embedding -p automatic-speech-recognition -p hostile -- -D warnings
