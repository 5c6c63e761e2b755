#!/usr/bin/env python3
"""Greedy text generation of our host on a device, token for token against
the committed transformers references of the tiny decoder fixtures.

For each tests/fixtures/tiny-{gpt2,opt,llama,qwen2,bloom} (written by
tests/fixtures/gen_tiny_decoders.py with transformers ``generate``, fp32,
CPU), using its reference.json prompts and max_new_tokens, this runs
``host run text-generation --device DEVICE --precision f32`` like
tests/generation.rs does:

* greedy, each prompt alone (``--batch-size 1``): token ids identical to
  ``new_ids``;
* greedy, all prompts in one left-padded batch (``--batch-size N``): identical,
  and the responses must report that batch size (else batching was not tested);
* the same two with ``repetition_penalty: 1.3`` against
  ``new_ids_repetition_penalty_1_3``;
* prefill logits (``return_logits``, one new token) against
  ``prefill_logits``: max-abs <= ``--logits-tol`` (1e-4, as tests/generation.rs).

Also checks ``finish_reason`` ("length", or "eos" where the reference
stopped early) and that the responses were served by the asked device.
Writes PREFIX.json and PREFIX.md; exits 1 on any mismatch or error.

Usage::

    python3 scripts/gpu/gen_fidelity.py --host .gpu/host --out OUT/gen_fidelity [--device cuda]
        [--archs gpt2,opt,llama,qwen2,bloom] [--logits-tol 1e-4]

    # locally:
    /work/pyenv/ref/bin/python scripts/gpu/gen_fidelity.py --host target/release/host \
        --out /tmp/gen_fid --device cpu
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

from common import (FIXTURES, fmt, host_devices, host_error_text, log, machine, md_escape,
                    resolve_host, run_cmd, utc_now, versions, write_jsonl, write_outputs)

ARCHS = ["gpt2", "opt", "llama", "qwen2", "bloom", "gptj", "gpt_neo", "codegen", "mistral"]


def run_host(args, model: Path, requests: list[dict], bs: int, tmp: Path, tag: str) -> dict:
    """One `host run` process; returns {"responses": [...]} or {"error": text}."""
    inputs = tmp / f"{tag}.jsonl"
    write_jsonl(inputs, requests)
    cmd = [str(args.host), "run", "text-generation", "--model", str(model),
           "--device", args.device, "--precision", args.precision,
           "--inputs", str(inputs), "--batch-size", str(bs)]
    r = run_cmd(cmd, timeout=args.timeout)
    out = {"cmd": " ".join(cmd), "rc": r["rc"], "wall_s": round(r["wall_s"], 2)}
    lines = [ln for ln in r["stdout"].splitlines() if ln.strip()]
    try:
        responses = [json.loads(ln) for ln in lines]
    except json.JSONDecodeError as exc:
        out["error"] = f"unparsable output ({exc}); " + host_error_text(r["stderr"], r["rc"])
        return out
    if len(responses) != len(requests):
        out["error"] = (f"{len(responses)} responses for {len(requests)} requests; "
                        + host_error_text(r["stderr"], r["rc"]))
        return out
    errs = [x["error"] for x in responses if "error" in x]
    if errs:
        out["error"] = f"{len(errs)} requests failed; first: {errs[0].get('kind')}: {errs[0].get('message')}"
        return out
    out["responses"] = responses
    return out


def check_tokens(name: str, responses: list[dict], want: list[list[int]], prompts: list[str],
                 device: str, batch: int | None, max_new: int) -> dict:
    row: dict = {"check": name, "prompts": len(want)}
    problems = []
    same = 0
    for resp, w, p in zip(responses, want, prompts):
        got = resp.get("token_ids")
        if got == w:
            same += 1
        elif "first_mismatch" not in row:
            i = next((k for k, (a, b) in enumerate(zip(got or [], w)) if a != b),
                     min(len(got or []), len(w)))
            row["first_mismatch"] = {"prompt": p, "position": i, "got": got, "want": w}
            problems.append(f"prompt {p!r}: first difference at new token {i}")
        # The reference stopped early only on eos.
        expect = "length" if len(w) == max_new else "eos"
        if resp.get("finish_reason") != expect:
            problems.append(f"prompt {p!r}: finish_reason {resp.get('finish_reason')!r}, "
                            f"expected {expect!r}")
    row["identical"] = same
    family = device.split(":")[0]
    served = sorted({str(r.get("device")) for r in responses})
    row["served_device"] = served
    if any(s.split(":")[0] != family for s in served):
        problems.append(f"served by {served}, asked for {device}")
    sizes = sorted({(r.get("timings") or {}).get("batch_size") for r in responses}, key=str)
    row["batch_sizes_seen"] = sizes
    if batch is not None and sizes != [batch]:
        problems.append(f"responses report batch sizes {sizes}, expected one batch of {batch}")
    tps = [(r.get("timings") or {}).get("tokens_per_second") for r in responses]
    row["tokens_per_second_reported"] = [t for t in tps if t is not None]
    row["status"] = "fail" if problems else "pass"
    if problems:
        row["problems"] = problems[:5]
    return row


def check_arch(args, arch: str, tmp: Path) -> list[dict]:
    model = FIXTURES / f"tiny-{arch}"
    ref = json.loads((model / "reference.json").read_text())
    cases = ref["cases"]
    n_new = ref["max_new_tokens"]
    prompts = [c["prompt"] for c in cases]
    greedy = [{"prompt": p, "max_new_tokens": n_new, "do_sample": False} for p in prompts]
    penal = [dict(r, repetition_penalty=1.3) for r in greedy]
    logits_req = [{"prompt": p, "max_new_tokens": 1, "do_sample": False, "return_logits": True}
                  for p in prompts]
    want = [c["new_ids"] for c in cases]
    want_pen = [c["new_ids_repetition_penalty_1_3"] for c in cases]
    rows = []
    if args.precision != "f32":
        return check_half(args, arch, model, cases, logits_req, tmp)

    def add(row: dict, run: dict) -> None:
        row.update({"arch": arch, "wall_s": run.get("wall_s"), "cmd": run.get("cmd")})
        log(f"  {arch:6} {row['check']:<24} {row['status']}"
            + (f" {row.get('identical')}/{row.get('prompts')}" if "identical" in row else "")
            + (f" max-abs {row['max_abs']:.2e}" if "max_abs" in row else "")
            + (f" -- {row.get('error') or '; '.join(row.get('problems', []))}"
               if row["status"] != "pass" else ""))
        rows.append(row)

    # Alone: greedy, penalty and logits requests, one per skill call.
    alone = run_host(args, model, greedy + penal + logits_req, 1, tmp, f"{arch}_alone")
    if "error" in alone:
        for name in ("greedy alone", "penalty 1.3 alone", "prefill logits"):
            add({"check": name, "status": "error", "error": alone["error"]}, alone)
    else:
        resp = alone["responses"]
        n = len(prompts)
        add(check_tokens("greedy alone", resp[:n], want, prompts, args.device, 1, n_new), alone)
        add(check_tokens("penalty 1.3 alone", resp[n:2 * n], want_pen, prompts, args.device,
                         1, n_new), alone)
        worst, problems = 0.0, []
        for c, r in zip(cases, resp[2 * n:]):
            got = r.get("prefill_logits")
            if not isinstance(got, list) or len(got) != len(c["prefill_logits"]):
                problems.append(f"prompt {c['prompt']!r}: no prefill_logits of the vocabulary's length")
                continue
            worst = max(worst, max(abs(a - b) for a, b in zip(got, c["prefill_logits"])))
        if worst > args.logits_tol:
            problems.append(f"max-abs {worst:.2e} > {args.logits_tol:.0e}")
        row = {"check": "prefill logits", "prompts": n, "max_abs": worst,
               "status": "fail" if problems else "pass"}
        if problems:
            row["problems"] = problems[:5]
        add(row, alone)

    # Batched: every prompt in one left-padded batch.
    for name, reqs, w in (("greedy batched", greedy, want), ("penalty 1.3 batched", penal, want_pen)):
        run = run_host(args, model, reqs, len(reqs), tmp, f"{arch}_{name.replace(' ', '_')}")
        if "error" in run:
            add({"check": name, "status": "error", "error": run["error"]}, run)
        else:
            add(check_tokens(name, run["responses"], w, prompts, args.device, len(reqs), n_new), run)
    return rows


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# Greedy generation vs transformers on {m['label']} (`--device {report['device']}`, "
        f"{report['precision']})",
        "",
        "- references: tests/fixtures/tiny-*/reference.json (transformers `generate`, fp32 CPU, "
        "greedy); token ids must be identical",
        (f"- prefill logits tolerance: max-abs <= {report['logits_tol']:.0e}"
         if report["precision"] == "f32" else
         f"- {report['precision']}: prefill logits cosine >= {report['half_cos']} (token ids "
         "may differ from the fp32 reference, so they are not compared)"),
        f"- driver {m.get('driver') or '-'}; date {report['date']}; overall: "
        f"**{'PASS' if report['ok'] else 'FAIL'}**",
        "",
        "| arch | check | status | identical | max abs | batch sizes | wall s | note |",
        "|---|---|---|---:|---:|---|---:|---|",
    ]
    for r in report["results"]:
        ident = f"{r['identical']}/{r['prompts']}" if "identical" in r else "-"
        note = r.get("error") or "; ".join(r.get("problems", []))
        if "cosine" in r:
            note = f"cosine {r['cosine']:.6f}" + (f"; {note}" if note else "")
        lines.append(
            f"| {r['arch']} | {r['check']} | {r['status']} | {ident} | {fmt(r.get('max_abs'), '.2e')} | "
            f"{','.join(str(s) for s in r.get('batch_sizes_seen', [])) or '-'} | "
            f"{fmt(r.get('wall_s'), '.1f')} | {md_escape(note)[:300]} |")
    return "\n".join(lines) + "\n"


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na > 0 and nb > 0 else 0.0


def check_half(args, arch: str, model: Path, cases: list[dict], logits_req: list[dict],
               tmp: Path) -> list[dict]:
    """f16/bf16: greedy ids may legitimately differ from the fp32 reference,
    so the check is the prefill logits' cosine (>= --half-cos, the project's
    0.999 for reduced precision), with the max-abs reported."""
    run = run_host(args, model, logits_req, 1, tmp, f"{arch}_{args.precision}_logits")
    row = {"check": f"prefill logits {args.precision}", "arch": arch,
           "wall_s": run.get("wall_s"), "cmd": run.get("cmd")}
    if "error" in run:
        row.update({"status": "error", "error": run["error"]})
        return [row]
    worst_cos, worst_abs, problems = 1.0, 0.0, []
    for c, r in zip(cases, run["responses"]):
        got = r.get("prefill_logits")
        if not isinstance(got, list) or len(got) != len(c["prefill_logits"]):
            problems.append(f"prompt {c['prompt']!r}: no prefill_logits of the vocabulary's length")
            continue
        worst_cos = min(worst_cos, cosine(got, c["prefill_logits"]))
        worst_abs = max(worst_abs, max(abs(a - b) for a, b in zip(got, c["prefill_logits"])))
    if worst_cos < args.half_cos:
        problems.append(f"cosine {worst_cos:.6f} < {args.half_cos}")
    row.update({"prompts": len(cases), "max_abs": worst_abs, "cosine": worst_cos,
                "status": "fail" if problems else "pass"})
    if problems:
        row["problems"] = problems[:5]
    log(f"  {arch:6} {row['check']:<24} {row['status']} cosine {worst_cos:.6f} "
        f"max-abs {worst_abs:.2e}")
    return [row]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", required=True)
    ap.add_argument("--out", required=True, help="output prefix (PREFIX.json, PREFIX.md)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precision", default="f32",
                    help="f32 (default): the references are fp32, only f32 must be identical")
    ap.add_argument("--archs", default=",".join(ARCHS))
    ap.add_argument("--logits-tol", type=float, default=1e-4)
    ap.add_argument("--half-cos", type=float, default=0.999,
                    help="f16/bf16: minimum cosine of the prefill logits")
    ap.add_argument("--timeout", type=float, default=120, help="seconds per host process")
    args = ap.parse_args(argv)
    args.host = resolve_host(args.host)
    archs = [a.strip() for a in args.archs.split(",") if a.strip()]

    results = []
    with tempfile.TemporaryDirectory(prefix="gen_fidelity_") as tmpdir:
        for arch in archs:
            if not (FIXTURES / f"tiny-{arch}" / "reference.json").is_file():
                results.append({"arch": arch, "check": "-", "status": "error",
                                "error": f"no fixture tests/fixtures/tiny-{arch}"})
                continue
            log(f"{arch}: tests/fixtures/tiny-{arch} on {args.device} {args.precision}")
            results += check_arch(args, arch, Path(tmpdir))
    ok = bool(results) and all(r["status"] == "pass" for r in results)
    report = {
        "benchmark": "greedy generation token identity vs transformers references",
        "generator": "scripts/gpu/gen_fidelity.py",
        "date": utc_now(),
        "device": args.device,
        "precision": args.precision,
        "logits_tol": args.logits_tol,
        "half_cos": args.half_cos,
        "machine": machine(args.device),
        "host_devices": host_devices(args.host),
        "versions": versions(),
        "results": results,
        "ok": ok,
    }
    jp, mp = write_outputs(args.out, report, markdown(report))
    log(f"wrote {jp} and {mp}")
    print(mp.read_text())
    if not ok:
        bad = [r for r in results if r["status"] != "pass"]
        log(f"FAIL: {len(bad)} of {len(results)} checks did not pass")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
