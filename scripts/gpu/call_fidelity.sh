#!/usr/bin/env bash
# Call 1: the fidelity suite (QUICK) on cuda with this build.
cd "$(dirname "$0")/../.."
mkdir -p .gpu && tar xJf .gpuc/tok.tar.xz -C .gpu
source scripts/gpu/prep_carried.sh
export QUICK=1 MODELS_DIR=/tmp/gpu-models-q
mkdir -p "$OUT/fid"
timeout ${T1:-530} bash scripts/gpu/run_suite.sh "$OUT/fid" fidelity > "$OUT/fid.log" 2>&1
echo "suite rc=$?"
cat "$OUT/fid/summary.txt"
grep -h "test result\|FAILED\|panicked" "$OUT/fid.log" | head -40
