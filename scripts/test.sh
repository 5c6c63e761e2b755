#!/usr/bin/env bash
# The project's test command: installs what the tests need (scripts/setup.sh)
# and runs every test. Backends named in REQUIRE_BACKENDS (e.g. `cpu`) must be
# available; others are skipped with a printed reason.
# NVRTC (PyPI wheel nvidia-cuda-nvrtc, no GPU needed) is installed too, so
# the CUDA kernel source is compiled to sm_90 machine code on every run:
# a kernel that does not compile fails here, not first on the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
RT=.runtime/py
NVRTC_VERSION=13.0.88
if [ ! -f "$RT/nvidia/cu13/lib/libnvrtc.so.13" ]; then
  printf '==> %s\n' "installing nvidia-cuda-nvrtc==$NVRTC_VERSION (the CUDA kernel compiler) into $RT" >&2
  "${PYTHON:-python3}" -m pip install --quiet --disable-pip-version-check --no-deps --target "$RT" \
    "nvidia-cuda-nvrtc==$NVRTC_VERSION"
fi
export LD_LIBRARY_PATH="$PWD/$RT/nvidia/cu13/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export REQUIRE_NVRTC=1
# The official clients (tests/serve_security.rs drives a server with them),
# in their own directory: their dependencies stay off the runtime path.
# huggingface_hub's feature_extraction needs numpy, which it does not
# declare: installed with them (the machine's python3 may have none).
CLIENTS=.runtime/clients
if [ ! -f "$CLIENTS/.installed-openai-3.63.0-hfhub-2.4.0-numpy-2.2.6" ]; then
  printf '==> %s\n' "installing the openai and huggingface_hub clients into $CLIENTS" >&2
  rm -rf "$CLIENTS"
  "${PYTHON:-python3}" -m pip install --quiet --disable-pip-version-check --target "$CLIENTS" \
    "openai==3.63.0" "huggingface_hub==2.4.0" "numpy==2.2.6" 2>&1 | grep -v "dependency resolver\|requires\|WARNING: Running pip" >&2 || true
  [ -d "$CLIENTS/openai" ] && touch "$CLIENTS/.installed-openai-3.63.0-hfhub-2.4.0-numpy-2.2.6"
fi
export REQUIRE_CLIENTS=1
# Scale-out (docs/deploy.md): the Kubernetes manifests are validated offline
# against the bundled Kubernetes JSON schemas (tests/deploy.rs), and three
# host serve replicas run behind HAProxy (tests/load_balancer.rs).
K8S=.runtime/k8s-validate
if [ ! -f "$K8S/.installed-kubernetes-validate-1.37.0" ]; then
  printf '==> %s\n' "installing kubernetes-validate==1.37.0 (offline manifest validation) into $K8S" >&2
  rm -rf "$K8S"
  "${PYTHON:-python3}" -m pip install --quiet --disable-pip-version-check --target "$K8S" \
    "kubernetes-validate==1.37.0" 2>&1 | grep -v "WARNING: Running pip" >&2 || true
  [ -d "$K8S/kubernetes_validate" ] && touch "$K8S/.installed-kubernetes-validate-1.37.0"
fi
export REQUIRE_K8S_VALIDATE=1
if ! command -v haproxy >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  printf '==> %s\n' "installing haproxy (apt-get) for the load-balancer test" >&2
  apt-get install -y -qq haproxy >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq haproxy >/dev/null 2>&1; } || true
fi
command -v haproxy >/dev/null && export REQUIRE_HAPROXY=1
# The guest SDK's unit tests (beam search, processors, image resampling,
# Swin indices) run natively.
cargo test --release --quiet -p skill-sdk --features generation,image,audio --lib
cargo test --release -p host "$@"
# The op cases (tests/backend_ops.rs) ran on cpu above; once more on OpenVINO
# (the binary is built, ~10 s), required where REQUIRE_BACKENDS names it.
# Only when the arguments select that test (no target named, `--tests`,
# `--all-targets` or `--test backend_ops`), with their other arguments.
ov_args=() ov_run=1 ov_named=0 ov_skip_next=0 ov_rest=0
for a in "$@"; do
  if [ "$ov_rest" = 1 ]; then ov_args+=("$a"); continue; fi
  if [ "$ov_skip_next" = 1 ]; then
    ov_skip_next=0
    [ "$a" = backend_ops ] && ov_named=1
    continue
  fi
  case "$a" in
    --) ov_rest=1; ov_args+=("$a") ;;
    --test|--bin|--example|--bench) ov_run=0; ov_skip_next=1 ;;
    --test=backend_ops) ov_run=0; ov_named=1 ;;
    --test=*|--bin=*|--example=*|--bench=*|--lib|--bins|--doc|--examples|--benches) ov_run=0 ;;
    --tests|--all-targets) ;;
    *) ov_args+=("$a") ;;
  esac
done
if [ "$ov_run" = 1 ] || [ "$ov_named" = 1 ]; then
  OPS_DEVICE=openvino cargo test --release -p host --test backend_ops ${ov_args[@]+"${ov_args[@]}"}
fi
