#!/usr/bin/env python3
"""Embedding fidelity of our host on a device, against transformers fp32 CPU.

For each model -- OUTDIR/minilm, OUTDIR/bge-base and OUTDIR/mpnet-base
(scripts/gpu/make_models.py) and the committed tests/fixtures/tiny-bert -- the
reference is computed here with plain transformers on the same weights:
``AutoModel`` (BertModel, MPNetModel, ... whatever config.json names) in
float32 on the CPU, fed only the tokenizer outputs its ``forward`` accepts
(MPNet takes no token_type_ids), truncation at the model's
sentence-transformers ``max_seq_length``,
masked mean pooling over the attention mask, L2 normalisation (what
sentence-transformers does for these models; the reference is cross-checked
against ``SentenceTransformer.encode`` and must agree within 1e-5). The texts
are the 36 of tests/fixtures/gen_minilm_reference.py (short and long, one
truncated, unicode, emoji, punctuation, code, near-empty).

Then, for every precision P and batch size B, one process::

    host run text-embedding --model DIR --device DEVICE --precision P \
         --inputs texts.jsonl --batch-size B

and per (model, P, B): the worst (lowest) cosine similarity and the largest
absolute difference to the reference, token counts against the reference's,
and pass/fail:

    f32:      cosine >= 0.99999 and max-abs <= 1e-4
    f16/bf16: cosine >= 0.999

plus batch invariance: per (model, P), the max-abs difference between the
B=1 embeddings and each other B's. A response served by another device or
precision than asked, a non-finite value, a request error or a failed run is
a failure; "device does not support precision" is reported as unsupported and
is a failure too unless ``--allow-unsupported``.

Writes PREFIX.json and PREFIX.md (naming the GPU, or "cpu"); exits 1 on any
failure, 0 otherwise.

Usage::

    python3 scripts/gpu/embed_fidelity.py --host .gpu/host --models /tmp/gpu-models \
        --out OUT/embed_fidelity [--device cuda] [--precisions f32,f16,bf16] \
        [--batch-sizes 1,8,32,256] [--only minilm,bge-base,mpnet-base,tiny-bert]
        [--allow-unsupported]

    # locally, CPU backend (f32 only):
    /work/pyenv/ref/bin/python scripts/gpu/embed_fidelity.py --host target/release/host \
        --models /tmp/gpu-models-q --out /tmp/embed_fid --device cpu --precisions f32
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from common import (FIXTURES, fmt, host_devices, host_error_text, log, machine, md_escape,
                    quiet_hf, resolve_host, run_cmd, utc_now, versions, write_jsonl,
                    write_outputs)

THRESHOLDS = {
    "f32": {"min_cosine": 0.99999, "max_abs": 1e-4},
    "f16": {"min_cosine": 0.999, "max_abs": None},
    "bf16": {"min_cosine": 0.999, "max_abs": None},
}
ST_AGREEMENT = 1e-5


def load_texts() -> list[str]:
    """The text set of tests/fixtures/gen_minilm_reference.py (imported, not copied)."""
    path = FIXTURES / "gen_minilm_reference.py"
    spec = importlib.util.spec_from_file_location("gen_minilm_reference", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return list(mod.TEXTS)


def max_seq_length(model_dir: Path) -> int:
    return int(json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"])


def model_inputs(model, enc) -> dict:
    """The tokenizer outputs that ``model.forward`` takes (by name)."""
    import inspect

    params = inspect.signature(model.forward).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()) and "input_ids" not in params:
        return dict(enc)
    return {k: v for k, v in enc.items() if k in params}


def reference(model_dir: Path, texts: list[str]) -> dict:
    """fp32 CPU transformers: masked mean + L2 norm; cross-checked with ST."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    max_len = max_seq_length(model_dir)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModel.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt")
    feed = model_inputs(model, enc)
    with torch.inference_mode():
        hidden = model(**feed).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    emb = torch.nn.functional.normalize(pooled, p=2, dim=1).numpy().astype(np.float32)
    counts = [int(n) for n in enc["attention_mask"].sum(1).tolist()]
    # How alike different texts' embeddings are (random weights cluster them):
    # a threshold must be well above this to tell texts apart.
    sims = emb.astype(np.float64) @ emb.astype(np.float64).T
    off = sims[~np.eye(len(texts), dtype=bool)]
    out = {"embeddings": emb, "token_counts": counts, "max_seq_length": max_len,
           "model_class": type(model).__name__, "model_inputs": sorted(feed),
           "truncated_texts": sum(c >= max_len for c in counts),
           "pairwise_cosine_between_texts": {"mean": float(off.mean()), "max": float(off.max())}}
    try:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(model_dir), device="cpu")
        st_emb = st.encode(texts, batch_size=len(texts), convert_to_numpy=True,
                           show_progress_bar=False).astype(np.float32)
        out["st_max_abs_diff"] = float(np.max(np.abs(st_emb - emb)))
        out["st_max_seq_length"] = int(st.max_seq_length)
    except Exception as exc:  # noqa: BLE001 - recorded, judged below
        out["st_error"] = f"{type(exc).__name__}: {exc}"
    return out


def compare(got: np.ndarray, ref: np.ndarray) -> dict:
    g = got.astype(np.float64)
    r = ref.astype(np.float64)
    cos = np.sum(g * r, 1) / (np.linalg.norm(g, axis=1) * np.linalg.norm(r, axis=1))
    return {"worst_cosine": float(np.min(cos)), "worst_cosine_text": int(np.argmin(cos)),
            "max_abs": float(np.max(np.abs(g - r)))}


def run_one(args, model_dir: Path, inputs: Path, n: int, precision: str, bs: int) -> dict:
    cmd = [str(args.host), "run", "text-embedding", "--model", str(model_dir),
           "--device", args.device, "--precision", precision,
           "--inputs", str(inputs), "--batch-size", str(bs)]
    r = run_cmd(cmd, timeout=args.timeout)
    row: dict = {"cmd": " ".join(cmd), "rc": r["rc"], "wall_s": round(r["wall_s"], 2)}
    lines = [ln for ln in r["stdout"].splitlines() if ln.strip()]
    parsed = []
    for ln in lines:
        try:
            parsed.append(json.loads(ln))
        except json.JSONDecodeError:
            parsed.append({"error": {"kind": "unparsable", "message": ln[:200]}})
    if len(parsed) != n:
        text = host_error_text(r["stderr"], r["rc"])
        row["status"] = "unsupported" if "does not support precision" in text else "error"
        row["error"] = text if parsed == [] else f"{len(parsed)} responses for {n} inputs; {text}"
        return row
    errors = [p["error"] for p in parsed if "error" in p]
    if errors:
        row["status"] = "error"
        row["error"] = (f"{len(errors)}/{n} requests failed; first: "
                        f"{errors[0].get('kind')}: {errors[0].get('message')}")[:600]
        return row
    row["served_device"] = sorted({str(p.get("device")) for p in parsed})
    row["served_precision"] = sorted({str(p.get("precision")) for p in parsed})
    row["_emb"] = np.asarray([p["embedding"] for p in parsed], dtype=np.float32)
    row["_tokens"] = [p.get("tokens") for p in parsed]
    return row


def judge(row: dict, ref: dict, precision: str, device: str) -> None:
    emb = row["_emb"]  # kept for batch invariance, dropped before writing
    tokens = row.pop("_tokens")
    problems = []
    if not np.all(np.isfinite(emb)):
        problems.append("non-finite values")
    if emb.shape != ref["embeddings"].shape:
        problems.append(f"shape {emb.shape} vs reference {ref['embeddings'].shape}")
    else:
        row.update(compare(emb, ref["embeddings"]))
    bad_tokens = [i for i, (a, b) in enumerate(zip(tokens, ref["token_counts"])) if a != b]
    row["token_count_mismatches"] = len(bad_tokens)
    if bad_tokens:
        i = bad_tokens[0]
        problems.append(f"token counts differ on {len(bad_tokens)} texts (text {i}: "
                        f"{tokens[i]} vs {ref['token_counts'][i]})")
    family = device.split(":")[0]
    if any(d.split(":")[0] != family for d in row["served_device"]):
        problems.append(f"served by {row['served_device']}, asked for {device}")
    if row["served_precision"] != [precision]:
        problems.append(f"served in {row['served_precision']}, asked for {precision}")
    th = THRESHOLDS[precision]
    if "worst_cosine" in row:
        if not row["worst_cosine"] >= th["min_cosine"]:
            problems.append(f"worst cosine {row['worst_cosine']:.7f} < {th['min_cosine']}")
        if th["max_abs"] is not None and not row["max_abs"] <= th["max_abs"]:
            problems.append(f"max-abs {row['max_abs']:.2e} > {th['max_abs']:.0e}")
    row["status"] = "fail" if problems else "pass"
    if problems:
        row["problems"] = problems


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"# Embedding fidelity on {m['label']} (`--device {report['device']}`)",
        "",
        f"- reference: transformers AutoModel fp32 on the CPU, masked mean + L2 norm, "
        f"{report['texts']} texts (tests/fixtures/gen_minilm_reference.py)",
        f"- thresholds: f32 cosine >= {THRESHOLDS['f32']['min_cosine']} and max-abs <= "
        f"{THRESHOLDS['f32']['max_abs']:.0e}; f16/bf16 cosine >= {THRESHOLDS['f16']['min_cosine']}",
        f"- driver {m.get('driver') or '-'}; torch {report['versions'].get('torch')}, "
        f"transformers {report['versions'].get('transformers')}",
        f"- date: {report['date']}; overall: **{'PASS' if report['ok'] else 'FAIL'}**",
        "",
        "| model | precision | batch | status | worst cosine | max abs | token counts | wall s | note |",
        "|---|---|---:|---|---:|---:|---|---:|---|",
    ]
    for r in report["results"]:
        tok = ("ok" if r.get("token_count_mismatches") == 0 else
               f"{r['token_count_mismatches']} differ" if "token_count_mismatches" in r else "-")
        note = r.get("error") or "; ".join(r.get("problems", []))
        lines.append(
            f"| {r['model']} | {r['precision']} | {r['batch_size']} | {r['status']} | "
            f"{fmt(r.get('worst_cosine'), '.7f')} | {fmt(r.get('max_abs'), '.2e')} | {tok} | "
            f"{fmt(r.get('wall_s'), '.1f')} | {md_escape(note)[:300]} |")
    bss = report["batch_sizes"]
    others = [b for b in bss if b != 1]
    if 1 in bss and others:
        lines += ["", "Batch invariance: max-abs difference to the batch-1 embeddings.", "",
                  "| model | precision | " + " | ".join(f"B={b}" for b in others) + " |",
                  "|---|---|" + "---:|" * len(others)]
        for inv in report["batch_invariance"]:
            cells = [fmt(inv["max_abs_vs_b1"].get(str(b)), ".2e") for b in others]
            lines.append(f"| {inv['model']} | {inv['precision']} | " + " | ".join(cells) + " |")
    refs = report["references"]
    lines += ["", "Reference cross-check (transformers vs sentence-transformers encode, max-abs):", ""]
    for name, info in refs.items():
        pw = info.get("pairwise_cosine_between_texts", {})
        lines.append(f"- {name}: " + (f"{info['st_max_abs_diff']:.2e}" if "st_max_abs_diff" in info
                                      else info.get("st_error", info.get("error", "-")))
                     + f" ({info.get('model_class', '-')} on {', '.join(info.get('model_inputs', [])) or '-'}; "
                     f"max_seq_length {info.get('max_seq_length', '-')}, "
                     f"{info.get('truncated_texts', '-')} text(s) truncated; cosine between "
                     f"different texts: mean {fmt(pw.get('mean'), '.3f')}, max {fmt(pw.get('max'), '.4f')})")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", required=True, help="the host binary")
    ap.add_argument("--models", required=True, type=Path, help="make_models.py OUTDIR")
    ap.add_argument("--out", required=True, help="output prefix (PREFIX.json, PREFIX.md)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precisions", default="f32,f16,bf16")
    ap.add_argument("--batch-sizes", default="1,8,32,256")
    ap.add_argument("--only", default="minilm,bge-base,mpnet-base,tiny-bert")
    ap.add_argument("--timeout", type=float, default=180, help="seconds per host process")
    ap.add_argument("--allow-unsupported", action="store_true",
                    help="an unsupported precision is not a failure")
    args = ap.parse_args(argv)
    args.host = resolve_host(args.host)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    for p in precisions:
        if p not in THRESHOLDS:
            raise SystemExit(f"unknown precision {p}; known: {list(THRESHOLDS)}")
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    quiet_hf()

    texts = load_texts()
    dirs = {}
    for name in [n.strip() for n in args.only.split(",") if n.strip()]:
        dirs[name] = (FIXTURES / "tiny-bert") if name == "tiny-bert" else (args.models / name)

    results, invariance, refs = [], [], {}
    with tempfile.TemporaryDirectory(prefix="embed_fidelity_") as tmp:
        inputs = Path(tmp) / "texts.jsonl"
        write_jsonl(inputs, [{"text": t} for t in texts])
        for name, d in dirs.items():
            if not (d / "config.json").is_file():
                msg = f"model directory {d} is missing (run scripts/gpu/make_models.py)"
                log(f"{name}: {msg}")
                refs[name] = {"error": msg}
                results.append({"model": name, "precision": "-", "batch_size": "-",
                                "status": "error", "error": msg})
                continue
            log(f"{name}: reference (transformers fp32 CPU) on {len(texts)} texts")
            ref = reference(d, texts)
            refs[name] = {k: v for k, v in ref.items() if k != "embeddings"}
            st_bad = ref.get("st_max_abs_diff", 0.0) > ST_AGREEMENT or "st_error" in ref
            if st_bad:
                msg = ("reference disagrees with sentence-transformers: "
                       + (f"max-abs {ref['st_max_abs_diff']:.2e}" if "st_max_abs_diff" in ref
                          else ref["st_error"]))
                log(f"  {msg}")
                results.append({"model": name, "precision": "-", "batch_size": "-",
                                "status": "error", "error": msg})
            for p in precisions:
                by_bs = {}
                for bs in batch_sizes:
                    row = {"model": name, "precision": p, "batch_size": bs}
                    row.update(run_one(args, d, inputs, len(texts), p, bs))
                    if "_emb" in row:
                        judge(row, ref, p, args.device)
                        by_bs[bs] = row["_emb"]
                    if row["status"] == "unsupported" and args.allow_unsupported:
                        row["status"] = "skipped (unsupported)"
                    log(f"  {name} {p} bs={bs}: {row['status']}"
                        + (f" worst cos {row['worst_cosine']:.7f} max-abs {row['max_abs']:.2e}"
                           if "worst_cosine" in row else "")
                        + (f" -- {row.get('error') or '; '.join(row.get('problems', []))}"
                           if row["status"] != "pass" else ""))
                    results.append(row)
                    refused = row["status"] in ("unsupported", "skipped (unsupported)") or (
                        row["status"] == "error" and "is not available" in row.get("error", ""))
                    if refused:
                        # The device refuses this precision (or is absent): so would the rest.
                        for rest in batch_sizes[batch_sizes.index(bs) + 1:]:
                            results.append({"model": name, "precision": p, "batch_size": rest,
                                            "status": row["status"], "error": "same as batch "
                                            f"{bs}: {row.get('error', '')}"[:600]})
                        break
                if 1 in by_bs and len(by_bs) > 1:
                    invariance.append({"model": name, "precision": p, "max_abs_vs_b1": {
                        str(b): float(np.max(np.abs(e.astype(np.float64) - by_bs[1])))
                        for b, e in by_bs.items() if b != 1}})

    for r in results:
        r.pop("_emb", None)
    ok_status = {"pass", "skipped (unsupported)"}
    ok = bool(results) and all(r["status"] in ok_status for r in results) and any(
        r["status"] == "pass" for r in results)
    report = {
        "benchmark": "embedding fidelity vs transformers fp32 CPU",
        "generator": "scripts/gpu/embed_fidelity.py",
        "date": utc_now(),
        "device": args.device,
        "machine": machine(args.device),
        "host_devices": host_devices(args.host),
        "versions": versions(),
        "texts": len(texts),
        "precisions": precisions,
        "batch_sizes": batch_sizes,
        "thresholds": THRESHOLDS,
        "references": refs,
        "results": results,
        "batch_invariance": invariance,
        "ok": ok,
    }
    jp, mp = write_outputs(args.out, report, markdown(report))
    log(f"wrote {jp} and {mp}")
    print(mp.read_text())
    failed = [r for r in results if r["status"] not in ok_status]
    if failed:
        log(f"FAIL: {len(failed)} of {len(results)} rows did not pass")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
