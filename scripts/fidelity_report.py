"""Runs the fidelity tests and renders their measured numbers.

Usage: python3 scripts/fidelity_report.py [--out-prefix results/fidelity]

It runs the `fidelity`, `encoders`, `generation` and `seq2seq` tests with HOST_FIDELITY_OUT
pointing at a temporary file (each passing comparison appends one JSON line:
embeddings: case, texts, worst cosine, worst max-abs, thresholds;
generation: case, prompts, token-identical), then writes
<prefix>.json and <prefix>.md with the machine named.
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-prefix", default="results/fidelity")
    args = ap.parse_args()
    with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as tmp:
        path = tmp.name
    env = dict(os.environ, HOST_FIDELITY_OUT=path)
    proc = subprocess.run(
        ["cargo", "test", "--release", "-p", "host", "--test", "fidelity", "--test", "encoders",
         "--test", "generation", "--test", "seq2seq", "--", "--test-threads=1"],
        env=env,
    )
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    os.unlink(path)
    if proc.returncode != 0:
        print("fidelity tests failed; results not written", file=sys.stderr)
        return proc.returncode
    report = {
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "os": platform.platform()},
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "reference": "sentence-transformers / transformers embeddings (tests/fixtures/*/reference.json)",
        "cases": rows,
    }
    with open(args.out_prefix + ".json", "w") as f:
        json.dump(report, f, indent=2)
    lines = [
        "# Fidelity vs sentence-transformers and transformers",
        "",
        f"- machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, {report['machine']['os']}",
        f"- date: {report['date']}",
        "- thresholds: f32 cosine >= 0.99999 and max-abs <= 1e-4; bf16/f16 cosine >= 0.999",
        "",
        "| case | texts | worst cosine | worst max-abs | threshold |",
        "|---|---:|---:|---:|---|",
    ]
    for r in (r for r in rows if "texts" in r):
        limit = f"cos >= {r['min_cosine']}" + (f", max-abs <= {r['max_abs_limit']}" if r["max_abs_limit"] else "")
        lines.append(f"| {r['case']} | {r['texts']} | {r['worst_cosine']:.9f} | {r['worst_max_abs']:.2e} | {limit} |")
    gen = [r for r in rows if "prompts" in r]
    if gen:
        lines += ["", "Greedy generation vs transformers `generate` (fp32, 24 new tokens, each prompt alone and all in one left-padded batch; also with repetition_penalty 1.3):", "",
                  "| case | prompts | token-identical | prefill logits max-abs (limit 1e-4) |", "|---|---:|---|---:|"]
        lines += [f"| {r['case']} | {r['prompts']} | {'yes' if r['identical'] else 'no'} | {r.get('prefill_logits_max_abs', float('nan')):.2e} |" for r in gen]
    s2s = [r for r in rows if "requests" in r]
    if s2s:
        lines += ["", "Encoder-decoder generation vs transformers `generate` (fp32: greedy, beam search variants and the generation_config defaults, each request alone and all in one batch):", "",
                  "| case | requests | token-identical |", "|---|---:|---|"]
        lines += [f"| {r['case']} | {r['requests']} | {'yes' if r['identical'] else 'no'} |" for r in s2s]
    with open(args.out_prefix + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
