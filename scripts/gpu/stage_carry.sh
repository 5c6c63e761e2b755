#!/usr/bin/env bash
# Stages two carries for the device tool (each under its 64 MiB limit with
# the ~32 MB of tracked files), for two calls on one warm GPU machine:
#
#   .gpuc/   the host, load generator, op-test, encoders, seq2seq and
#            image-text test binaries, the skills and the tokenizers
#            (xz): carry [".gpuc"], run `bash scripts/gpu/call_fidelity.sh`
#            (run_suite.sh fidelity, QUICK).
#   .gpuc2/  the vision and audio test binaries and, with OLD_HOST and
#            OLD_SKILLS set, a baseline host build and its text-embedding /
#            text-generation skills: carry [".gpuc2"] in the next call on the
#            same machine, run `bash scripts/gpu/call_ab.sh` (vision/audio
#            cuda tests, then scripts/gpu/ab_bench.py baseline vs this build).
#
# A baseline build: `git worktree add /tmp/old <commit>`, copy target/release
# and target/wasm32-wasip2 there (dependencies are reused), then in /tmp/old
# `cargo build --release -p host --bin host` and
# `cargo build --release --target wasm32-wasip2 -p text-embedding -p text-generation`;
# OLD_HOST=/tmp/old/target/release/host OLD_SKILLS=/tmp/old/target/wasm32-wasip2/release.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/gpu_stage.sh
rm -rf .gpuc .gpuc2
mkdir -p .gpuc .gpuc2
for f in host loadgen backend_ops encoders seq2seq image_text; do xz -T2 -6 -c ".gpu/$f" > ".gpuc/$f.xz"; done
for f in vision audio; do xz -T2 -6 -c ".gpu/$f" > ".gpuc2/$f.xz"; done
tar cJf .gpuc/skills.tar.xz -C .gpu/skills .
tar cJf .gpuc/tok.tar.xz -C .gpu minilm-tokenizer mpnet-tokenizer
if [ -n "${OLD_HOST:-}" ]; then
  strip -o /tmp/host_old "$OLD_HOST"
  xz -T2 -6 -c /tmp/host_old > .gpuc2/host_old.xz
  mkdir -p .gpuc2/old_skills
  cp "$OLD_SKILLS/text_embedding.wasm" "$OLD_SKILLS/text_generation.wasm" .gpuc2/old_skills/
fi
tracked=$(git ls-files -z | du -cb --files0-from=- | tail -1 | cut -f1)
for d in .gpuc .gpuc2; do
  size=$(du -cb "$d" | tail -1 | cut -f1)
  echo "$d: $size bytes (+ $tracked tracked = $((size + tracked)); limit 67108864)"
done
