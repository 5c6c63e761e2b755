"""CTC speech recognition benchmark: `host bench automatic-speech-recognition`
vs the transformers ASR pipeline on wav2vec2-base's real architecture
(facebook/wav2vec2-base-960h's config: 7 convolutions with group norm, 12
layers of 768, 32 characters) with random weights (seed 0), same machine,
same clips, in one script; seconds of audio transcribed per second of wall
time (real-time factor). Clips: scripts/bench_whisper.py's synthetic
speech-like 30 s signals as 16-bit WAV (the pipeline gets the same
samples). Greedy CTC on both sides; the transcripts are compared.

Usage: python3 scripts/bench_ctc.py [--device cpu|cuda] [--precision f32|f16]
       [--clips 8] [--batches 1,8] [--reps 2] [--out-prefix results/bench_ctc_cpu]
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers as tf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_whisper import RATE, SECONDS, bench_ours, clip, machine, sync, wav_b64  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# facebook/wav2vec2-base-960h's vocabulary.
VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H", "S", "R", "D", "L", "U",
         "M", "W", "C", "F", "G", "Y", "P", "B", "V", "K", "'", "X", "J", "Q", "Z"]


def make_model(work: Path) -> Path:
    out = work / "wav2vec2-base-random"
    if (out / "model.safetensors").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = tf.Wav2Vec2Config(vocab_size=len(VOCAB), pad_token_id=0, bos_token_id=1, eos_token_id=2,
                            feat_extract_norm="group", do_stable_layer_norm=False, conv_bias=False,
                            ctc_loss_reduction="sum")
    tf.Wav2Vec2ForCTC(cfg).eval().save_pretrained(str(out))
    (out / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(VOCAB)}))
    tok = tf.Wav2Vec2CTCTokenizer(str(out / "vocab.json"), unk_token="<unk>", pad_token="<pad>",
                                  word_delimiter_token="|")
    fe = tf.Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=RATE, padding_value=0.0, do_normalize=True,
                                     return_attention_mask=False)
    tf.Wav2Vec2Processor(feature_extractor=fe, tokenizer=tok).save_pretrained(str(out))
    return out


def bench_transformers(model_dir: Path, clips, bs: int, reps: int, device: str, dtype):
    pipe = tf.pipeline("automatic-speech-recognition", model=str(model_dir), device=device, dtype=dtype)
    rates, texts = [], []
    for rep in range(reps + 1):
        sync()
        t = time.perf_counter()
        out = pipe([c.copy() for c in clips], batch_size=bs)
        sync()
        if rep > 0:
            rates.append(len(clips) * SECONDS / (time.perf_counter() - t))
        texts = [o["text"] for o in out]
    del pipe
    return rates, texts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host-bin", default=str(ROOT / "target/release/host"))
    ap.add_argument("--work", default="/tmp/host-bench-ctc")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--clips", type=int, default=8)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--out-prefix", default="results/bench_ctc_cpu")
    ap.add_argument("--note", default="", help="a line about the run's conditions for the report")
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    torch_device = "cuda" if args.device.startswith("cuda") else "cpu"
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    clips = [clip(i) for i in range(args.clips)]
    encoded = [wav_b64(c) for c in clips]
    clips = [np.round(c * 32767).astype(np.float32) / 32768.0 for c in clips]
    model_dir = make_model(work)
    rows = []
    for bs in (int(b) for b in args.batches.split(",")):
        hf_rates, hf_text = bench_transformers(model_dir, clips, bs, args.reps, torch_device, dtype)
        our_rates, our_text = bench_ours(args.host_bin, model_dir, work, encoded, bs, args.reps, args.device,
                                         args.precision, {})
        row = {"model": "wav2vec2-base", "batch_size": bs,
               "transformers_realtime": statistics.median(hf_rates), "ours_realtime": statistics.median(our_rates),
               "identical_texts": sum(a == b for a, b in zip(hf_text, our_text)), "clips": len(clips)}
        row["ratio"] = row["ours_realtime"] / row["transformers_realtime"]
        rows.append(row)
        print(row, file=sys.stderr, flush=True)
    report = {
        "machine": machine(), "os": platform.platform(), "note": args.note,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ours": f"--device {args.device} --precision {args.precision}", "transformers_dtype": str(dtype),
        "versions": {"torch": torch.__version__, "transformers": tf.__version__}, "rows": rows,
    }
    Path(args.out_prefix + ".json").write_text(json.dumps(report, indent=2))
    lines = [
        "# CTC speech recognition (wav2vec2-base): host vs the transformers ASR pipeline",
        "",
        f"- machine: {report['machine']}" + (f"; {args.note}" if args.note else ""),
        f"- model: wav2vec2-base-960h's architecture, random weights; {len(clips)} synthetic clips of "
        f"{SECONDS:.0f} s, greedy CTC",
        f"- ours: `host bench automatic-speech-recognition {report['ours']}` (WAV decoding and normalisation "
        f"in the sandbox included); transformers: `pipeline(\"automatic-speech-recognition\")` in {dtype} on "
        f"{torch_device}",
        f"- date: {report['date']}; median of {args.reps} runs after a warm-up, in process; scripts/bench_ctc.py",
        "",
        "| model | batch | transformers (x real time) | ours (x real time) | ours/transformers | identical texts |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch_size']} | {r['transformers_realtime']:.1f} | "
                     f"{r['ours_realtime']:.1f} | {r['ratio']:.2f}x | {r['identical_texts']}/{r['clips']} |")
    Path(args.out_prefix + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
