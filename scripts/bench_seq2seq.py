"""Encoder-decoder generation benchmark: `host bench text2text-generation` vs
transformers `generate`, same machine, same inputs, in one script; tokens/s
for greedy and beam search (4 beams) at batch 1 and 16.

Models: flan-t5-small's and bart-base's real architectures (vocabularies
32128 and 50265) with random weights (seed 0), saved to --work; inputs use
the tiny fixtures' tokenizers (tests/fixtures/tiny-s2s-t5, -bart). No end
of sequence token, so every sequence generates exactly --new-tokens tokens
in both systems.

Usage: python3 scripts/bench_seq2seq.py [--device cpu|cuda] [--precision f32|f16]
       [--new-tokens 64] [--reps 3] [--batches 1,16] [--modes greedy,beam4]
       [--models flan-t5-small,bart-base] [--out-prefix results/bench_seq2seq_cpu]

On cuda, transformers runs in the same dtype as ours (`--precision f16`:
torch.float16); identical sequences are informational there (reduced
precision changes near-ties); in f32 they should all match.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers as tf
from tokenizers import Tokenizer

ROOT = Path(__file__).resolve().parent.parent
TEXTS = [f"Document {i}: the quick brown fox jumps over the lazy dog, and the cat sat on the mat near the "
         f"river while {i} children played in the garden every morning." for i in range(16)]


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return platform.processor()


def make_model(work: Path, name: str) -> Path:
    out = work / f"{name}-random"
    if (out / "model.safetensors").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if name == "flan-t5-small":
        cfg = tf.T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=1024, num_layers=8, num_decoder_layers=8,
                          num_heads=6, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
                          decoder_start_token_id=0, pad_token_id=0, eos_token_id=None)
        fixture = "tiny-s2s-t5"
    elif name == "bart-base":
        cfg = tf.BartConfig(vocab_size=50265, d_model=768, encoder_layers=6, decoder_layers=6,
                            encoder_attention_heads=12, decoder_attention_heads=12, encoder_ffn_dim=3072,
                            decoder_ffn_dim=3072, max_position_embeddings=1024, decoder_start_token_id=2,
                            pad_token_id=1, bos_token_id=0, eos_token_id=None, forced_bos_token_id=None,
                            forced_eos_token_id=None)
        fixture = "tiny-s2s-bart"
    else:
        raise SystemExit(f"unknown model {name}")
    model = tf.AutoModelForSeq2SeqLM.from_config(cfg).eval()
    model.generation_config = tf.GenerationConfig(decoder_start_token_id=cfg.decoder_start_token_id,
                                                  pad_token_id=cfg.pad_token_id)
    model.save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(ROOT / "tests/fixtures" / fixture / f, out / f)
    return out


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_transformers(model_dir: Path, ids: list[list[int]], bs: int, beams: int, new: int, reps: int,
                       device: str, dtype) -> tuple[list[float], list[list[int]]]:
    model = tf.AutoModelForSeq2SeqLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    pad = model.generation_config.pad_token_id
    rates, outs = [], []
    for rep in range(reps + 1):
        sync()
        t = time.perf_counter()
        produced, outs = 0, []
        for start in range(0, len(ids), bs):
            chunk = ids[start:start + bs]
            width = max(len(x) for x in chunk)
            x = torch.tensor([r + [pad] * (width - len(r)) for r in chunk], device=device)
            mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in chunk], device=device)
            with torch.no_grad():
                g = model.generate(input_ids=x, attention_mask=mask, max_new_tokens=new, do_sample=False,
                                   num_beams=beams, early_stopping=False, length_penalty=1.0)
            produced += (g.shape[1] - 1) * len(chunk)
            outs.extend(g[:, 1:].tolist())
        sync()
        if rep > 0:
            rates.append(produced / (time.perf_counter() - t))
    del model
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rates, outs


def bench_ours(host: str, model_dir: Path, work: Path, bs: int, beams: int, new: int, reps: int,
               device: str, precision: str) -> tuple[list[float], list[list[int]]]:
    inputs = work / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"text": t, "max_new_tokens": new, "num_beams": beams,
                                          "early_stopping": False, "length_penalty": 1.0}) + "\n"
                              for t in TEXTS))
    out = work / f"out_{bs}_{beams}.jsonl"
    cmd = [host, "bench", "text2text-generation", "--model", str(model_dir), "--inputs", str(inputs),
           "--batch-size", str(bs), "--warmup", "1", "--reps", str(reps), "--output", str(out),
           "--device", device, "--precision", precision]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"host failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])["bench"]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    if any("error" in r for r in lines):
        sys.exit(f"host answered errors: {[r for r in lines if 'error' in r][:2]}")
    tokens = sum(len(r["token_ids"]) for r in lines) / len(lines)
    return [r * tokens for r in stats["per_second"]], [r["token_ids"] for r in lines]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host-bin", default=str(ROOT / "target/release/host"))
    ap.add_argument("--work", default="/tmp/host-bench-seq2seq")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--modes", default="greedy,beam4")
    ap.add_argument("--models", default="flan-t5-small,bart-base")
    ap.add_argument("--out-prefix", default="results/bench_seq2seq_cpu")
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    torch_device = "cuda" if args.device.startswith("cuda") else "cpu"
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.models.split(","):
        model_dir = make_model(work, name)
        tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        ids = [tok.encode(t).ids for t in TEXTS]
        for mode in args.modes.split(","):
            beams = 1 if mode == "greedy" else int(mode.removeprefix("beam"))
            for bs in (int(b) for b in args.batches.split(",")):
                hf_rates, hf_out = bench_transformers(model_dir, ids, bs, beams, args.new_tokens, args.reps,
                                                      torch_device, dtype)
                our_rates, our_out = bench_ours(args.host_bin, model_dir, work, bs, beams, args.new_tokens,
                                                args.reps, args.device, args.precision)
                same = sum(a == b for a, b in zip(hf_out, our_out))
                row = {"model": name, "mode": mode, "batch_size": bs,
                       "transformers_tokens_per_s": statistics.median(hf_rates),
                       "ours_tokens_per_s": statistics.median(our_rates), "identical_sequences": same,
                       "sequences": len(TEXTS)}
                row["ratio"] = row["ours_tokens_per_s"] / row["transformers_tokens_per_s"]
                rows.append(row)
                print(row, file=sys.stderr, flush=True)
    report = {
        "machine": machine(), "os": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "new_tokens": args.new_tokens, "ours": f"--device {args.device} --precision {args.precision}",
        "transformers_dtype": str(dtype), "versions": {"torch": torch.__version__, "transformers": tf.__version__},
        "rows": rows,
    }
    Path(args.out_prefix + ".json").write_text(json.dumps(report, indent=2))
    lines = [
        "# Encoder-decoder generation: host vs transformers generate",
        "",
        f"- machine: {report['machine']}",
        f"- models: flan-t5-small and bart-base architectures, random weights; {len(TEXTS)} inputs, "
        f"{args.new_tokens} new tokens each (no end of sequence token)",
        f"- ours: `host bench text2text-generation {report['ours']}`; transformers `generate` in {dtype} "
        f"on {torch_device}",
        f"- date: {report['date']}; median of {args.reps} runs after a warm-up, in process",
        "",
        "| model | decoding | batch | transformers tok/s | ours tok/s | ours/transformers | identical |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['mode']} | {r['batch_size']} | {r['transformers_tokens_per_s']:.1f} | "
                     f"{r['ours_tokens_per_s']:.1f} | {r['ratio']:.2f}x | {r['identical_sequences']}/{r['sequences']} |")
    Path(args.out_prefix + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
