#!/usr/bin/env bash
# Call 2 (after call_fidelity.sh, on the same warm machine): vision and audio cuda tests,
# then the A/B of a baseline build (scripts/gpu/stage_carry.sh, OLD_HOST) against
# this one (LABEL_A, LABEL_B name them in the report).
cd "$(dirname "$0")/../.."
[ -x .gpu/host ] || { echo "no .gpu/host: call_fidelity.sh did not run on this machine"; exit 3; }
for f in vision audio host_old; do xz -dc .gpuc2/$f.xz > .gpu/$f && chmod +x .gpu/$f; done
mkdir -p .gpu/old_skills && cp .gpuc2/old_skills/*.wasm .gpu/old_skills/
export HOST_TEST_ROOT=$PWD CARGO_TARGET_DIR=$PWD/.gpu/target LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
mkdir -p "$OUT"
for t in vision audio; do
  timeout 150 ".gpu/$t" --test-threads 1 --nocapture cuda > "$OUT/$t.log" 2>&1; echo "$t rc=$?"
  grep -h "test result\|FAILED\|panicked" "$OUT/$t.log" | head -8
done
M=/tmp/gpu-models
timeout 200 python3 scripts/gpu/make_models.py $M --tokenizer-dir .gpu/minilm-tokenizer \
  --only minilm,bge-base,opt-125m,tinyllama > "$OUT/make_models.log" 2>&1; echo "make_models rc=$?"
timeout ${TAB:-300} python3 scripts/gpu/ab_bench.py --a .gpu/host_old --a-skills "$PWD/.gpu/old_skills" \
  --b .gpu/host --b-skills "$PWD/.gpu/skills" --models $M --rounds 2 \
  --only "minilm embed,bge-base embed bs32,opt-125m,tinyllama" \
  --label-a "${LABEL_A:-baseline}" --label-b "${LABEL_B:-this build}" --out "$OUT/ab_cuda" > "$OUT/ab.log" 2>&1
echo "ab rc=$?"; cat "$OUT/ab_cuda.md" 2>/dev/null || tail -20 "$OUT/ab.log"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv > "$OUT/gpu.csv" 2>&1
