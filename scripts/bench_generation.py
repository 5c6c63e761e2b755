"""Text-generation benchmark on the CPU: `host bench text-generation` vs
transformers `generate`, same machine, same prompts, greedy, fp32, in one
script; tokens/s at batch 1 and 16.

The model is opt-125m's real architecture (hidden 768, 12 layers, 12 heads,
vocabulary 50272) with random weights (seed 0), saved to --work; prompts
use the tiny BPE tokenizer of tests/fixtures/tiny-opt. No eos token, so
every sequence generates exactly --new-tokens tokens in both systems.

Usage: python3 scripts/bench_generation.py [--new-tokens 32] [--reps 3]
       [--out-prefix results/bench_generation_cpu] [--device cpu|openvino]
       [--precision f32|bf16] [--peer-dtype float32|bfloat16]

`--device openvino --precision bf16` runs ours on OpenVINO's CPU plugin with
bf16 inference (AMX where the CPU has it); `--peer-dtype` sets the dtype
transformers runs in. Identical sequences are then informational (reduced
precision changes near-ties).
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
from tokenizers import Tokenizer
from transformers import OPTConfig, OPTForCausalLM

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = [f"Prompt number {i}: the quick brown fox" for i in range(16)]


def cpu_name() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def make_model(work: Path) -> Path:
    out = work / "opt-125m-random"
    if (out / "model.safetensors").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = OPTConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, ffn_dim=3072,
                    vocab_size=50272, max_position_embeddings=2048, word_embed_proj_dim=768,
                    eos_token_id=None, bos_token_id=None, pad_token_id=1)
    model = OPTForCausalLM(cfg).eval()
    model.generation_config.eos_token_id = None
    model.save_pretrained(out)
    shutil.copy(ROOT / "tests/fixtures/tiny-opt/tokenizer.json", out / "tokenizer.json")
    return out


def bench_transformers(model_dir: Path, ids: list[list[int]], bs: int, new: int, reps: int,
                       dtype: str = "float32") -> tuple[list[float], list[list[int]]]:
    model = OPTForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype)).eval()
    rates, outs = [], []
    for rep in range(reps + 1):
        t = time.perf_counter()
        produced = 0
        outs = []
        for start in range(0, len(ids), bs):
            chunk = ids[start:start + bs]
            width = max(len(x) for x in chunk)
            x = torch.tensor([[1] * (width - len(r)) + r for r in chunk])
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in chunk])
            with torch.no_grad():
                g = model.generate(x, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                                   do_sample=False, pad_token_id=1, eos_token_id=None)
            produced += (g.shape[1] - width) * len(chunk)
            outs.extend(g[:, width:].tolist())
        if rep > 0:
            rates.append(produced / (time.perf_counter() - t))
    return rates, outs


def bench_ours(host: str, model_dir: Path, work: Path, bs: int, new: int, reps: int,
               device: str = "cpu", precision: str = "f32") -> tuple[list[float], list[list[int]]]:
    inputs = work / "prompts.jsonl"
    inputs.write_text("".join(json.dumps({"prompt": p, "max_new_tokens": new}) + "\n" for p in PROMPTS))
    out = work / f"out_{bs}.jsonl"
    cmd = [host, "bench", "text-generation", "--model", str(model_dir), "--inputs", str(inputs),
           "--batch-size", str(bs), "--warmup", "1", "--reps", str(reps), "--output", str(out),
           "--device", device, "--precision", precision]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"host failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])["bench"]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    tokens = sum(len(r["token_ids"]) for r in lines) / len(lines)
    return [r * tokens for r in stats["per_second"]], [r["token_ids"] for r in lines]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host-bin", default=str(ROOT / "target/release/host"))
    ap.add_argument("--work", default="/tmp/host-bench-generation")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out-prefix", default="results/bench_generation_cpu")
    ap.add_argument("--device", default="cpu", help="ours: cpu or openvino (its CPU plugin)")
    ap.add_argument("--precision", default="f32", help="ours: f32 or bf16")
    ap.add_argument("--peer-dtype", default="float32", help="transformers: float32 or bfloat16")
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model_dir = make_model(work)
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    ids = [tok.encode(p).ids for p in PROMPTS]
    rows = []
    for bs in (1, 16):
        hf_rates, hf_out = bench_transformers(model_dir, ids, bs, args.new_tokens, args.reps, args.peer_dtype)
        our_rates, our_out = bench_ours(args.host_bin, model_dir, work, bs, args.new_tokens, args.reps,
                                        args.device, args.precision)
        same = sum(a == b for a, b in zip(hf_out, our_out))
        row = {"batch_size": bs, "transformers_tokens_per_s": statistics.median(hf_rates),
               "ours_tokens_per_s": statistics.median(our_rates), "identical_sequences": same,
               "sequences": len(PROMPTS)}
        row["ratio"] = row["ours_tokens_per_s"] / row["transformers_tokens_per_s"]
        rows.append(row)
        print(row, file=sys.stderr)
    report = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "os": platform.platform()},
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": "opt-125m architecture, random weights", "new_tokens": args.new_tokens,
        "ours": f"--device {args.device} --precision {args.precision}", "transformers_dtype": args.peer_dtype,
        "versions": {"torch": torch.__version__}, "rows": rows,
    }
    Path(args.out_prefix + ".json").write_text(json.dumps(report, indent=2))
    lines = [
        "# Text generation on the CPU: host vs transformers generate",
        "",
        f"- machine: {report['machine']['cpu']}, {report['machine']['cores']} cores",
        f"- model: {report['model']}; {len(PROMPTS)} prompts, {args.new_tokens} new tokens each, greedy",
        f"- ours: `host bench text-generation {report['ours']}`; transformers `generate` in {args.peer_dtype}",
        f"- date: {report['date']}; median of {args.reps} runs after a warm-up, in process",
        "",
        "| batch | transformers tok/s | ours tok/s | ours/transformers | identical sequences |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['batch_size']} | {r['transformers_tokens_per_s']:.1f} | {r['ours_tokens_per_s']:.1f} | "
                     f"{r['ratio']:.2f}x | {r['identical_sequences']}/{r['sequences']} |")
    Path(args.out_prefix + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
