"""A/B of two host builds on the same machine in the same run: `host bench`
of each build, interleaved (A B A B ...), on the models of make_models.py.
Issue #26 asks that the refactors change no speed beyond noise; this
measures it.

Workloads (cuda, f16 unless --precision): text-embedding on minilm and
bge-base at batch 1, 32 and 256; text-generation on opt-125m and tinyllama,
64 new tokens (make_models.py's decoders have no end of text, so both
builds generate all of them) at
batch 1 and 16. Each build's median of its per-pass rates is taken per round;
the report gives every round and the median ratio B/A.

Usage: python3 scripts/gpu/ab_bench.py --a OLD_HOST --b NEW_HOST --models DIR
       [--a-skills DIR] [--b-skills DIR] [--rounds 3] [--device cuda]
       [--precision f16] [--out PREFIX]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WORDS = ("the quick brown fox jumps over a lazy dog while graphics processors multiply "
         "large matrices in half precision and servers answer many requests").split()


def sentences(n: int, seed: int = 0) -> list[str]:
    out = []
    x = seed + 1
    for i in range(n):
        k = 8 + i % 17
        words = []
        for _ in range(k):
            x = (x * 1103515245 + 12345) % (1 << 31)
            words.append(WORDS[x % len(WORDS)])
        out.append(" ".join(words))
    return out


def workloads(models: Path) -> list[dict]:
    w = []
    for m in ("minilm", "bge-base"):
        for bs, n in ((1, 128), (32, 1024), (256, 2048)):
            w.append(dict(name=f"{m} embed bs{bs}", skill="text-embedding", model=models / m,
                          bs=bs, reqs=[{"text": s} for s in sentences(n)], unit="sent/s", per=1))
    for m in ("opt-125m", "tinyllama"):
        for bs in (1, 16):
            n = bs * (2 if bs == 1 else 1)
            reqs = [{"prompt": s, "max_new_tokens": 64} for s in sentences(n, 7)]
            w.append(dict(name=f"{m} generate bs{bs}", skill="text-generation", model=models / m,
                          bs=bs, reqs=reqs, unit="tok/s", per=64))
    return w


def run(host: str, skills: str | None, wl: dict, device: str, precision: str, work: Path) -> float:
    inputs = work / (wl["name"].replace(" ", "_") + ".jsonl")
    inputs.write_text("".join(json.dumps(r) + "\n" for r in wl["reqs"]))
    env = dict(os.environ)
    if skills:
        env["HOST_SKILLS_DIR"] = skills
    cmd = [host, "bench", wl["skill"], "--model", str(wl["model"]), "--device", device,
           "--precision", precision, "--inputs", str(inputs), "--batch-size", str(wl["bs"]),
           "--warmup", "1", "--reps", "3"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    for line in p.stdout.splitlines():
        if line.startswith("{\"bench\""):
            b = json.loads(line)["bench"]
            if b.get("failures"):
                raise RuntimeError(f"{wl['name']}: {b['failures']} failures")
            return b["median_per_second"] * wl["per"]
    raise RuntimeError(f"{wl['name']}: no bench line (rc {p.returncode}): {p.stderr[-2000:]}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True, help="host binary A (the baseline)")
    ap.add_argument("--b", required=True, help="host binary B")
    ap.add_argument("--a-skills")
    ap.add_argument("--b-skills")
    ap.add_argument("--models", required=True, type=Path)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="f16")
    ap.add_argument("--only", default="", help="comma-separated workload name prefixes")
    ap.add_argument("--label-a", default="A")
    ap.add_argument("--label-b", default="B")
    ap.add_argument("--out", default="ab_bench")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ab_bench"))
    rows = []
    wls = workloads(args.models)
    if args.only:
        wls = [w for w in wls if any(w["name"].startswith(p) for p in args.only.split(","))]
    for wl in wls:
        a, b = [], []
        for _ in range(args.rounds):
            for host, skills, acc in ((args.a, args.a_skills, a), (args.b, args.b_skills, b)):
                try:
                    acc.append(run(host, skills, wl, args.device, args.precision, work))
                except Exception as e:  # noqa: BLE001 - recorded, the run goes on
                    print(f"{wl['name']}: {e}", file=sys.stderr)
        row = dict(name=wl["name"], unit=wl["unit"], a=a, b=b)
        if a and b:
            row["ratio"] = statistics.median(b) / statistics.median(a)
        rows.append(row)
        print(json.dumps(row), flush=True)
    Path(args.out + ".json").write_text(json.dumps(dict(device=args.device, precision=args.precision,
                                                        a=args.label_a, b=args.label_b, rows=rows), indent=1))
    lines = [f"| workload | {args.label_a} (median) | {args.label_b} (median) | B/A | rounds A | rounds B |",
             "|---|---:|---:|---:|---|---|"]
    for r in rows:
        fa = statistics.median(r["a"]) if r["a"] else float("nan")
        fb = statistics.median(r["b"]) if r["b"] else float("nan")
        lines.append(f"| {r['name']} ({r['unit']}) | {fa:.1f} | {fb:.1f} | {r.get('ratio', float('nan')):.3f} | "
                     f"{', '.join(f'{x:.0f}' for x in r['a'])} | {', '.join(f'{x:.0f}' for x in r['b'])} |")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
