#!/usr/bin/env python3
"""Same-run GPU benchmark: our host's CUDA backend vs transformers, plus the
card's measured peaks, for embeddings and text generation.

Every number is measured in this run on this machine; nothing is typed in.

Peaks (roofline inputs)
    fp16 and fp32 (TF32 off) GEMM TFLOP/s: ``torch.matmul`` of two
    8192x8192 matrices, timed with synchronisation; memory GB/s: a 1 GiB
    device-to-device ``copy_`` counted as read + write bytes.

Embeddings (models from make_models.py: minilm, bge-base, mpnet-base)
    Workload: ``--sentences`` (2048) deterministic sentences of 5-26 words
    (word lists of scripts/bench_minilm.py); batch size 1 uses the first
    ``--bs1-sentences`` (256) of them. Systems:

    * transformers ``AutoModel`` (BertModel, MPNetModel, ...) on the GPU:
      eager fp32 (TF32 disabled), eager fp16, sdpa fp16 (recorded as skipped,
      not failed, for a model class transformers has no sdpa for: MPNet).
      End to end: fast HF tokenizer, sort by length for batching (as
      sentence-transformers), pad to the batch's longest, copy to the GPU,
      forward (fed only the inputs the model takes: MPNet has no
      token_type_ids), masked mean + L2 norm in fp32, copy back. Also
      model-only: pre-tokenised batches already on the GPU, forward only,
      ``torch.cuda.synchronize`` around the timed loop. Batch-1 latency:
      median of per-sentence end-to-end times.
    * sentence-transformers fp16: ``SentenceTransformer(DIR).half()`` on the
      GPU, ``encode(texts, batch_size=B)`` (its own tokenisation, length
      sorting, default attention implementation, pooling and Normalize);
      batch 1 is one ``encode`` call per sentence. End to end only.
    * ours: ``host bench text-embedding --device cuda --precision f32|f16
      --batch-size B --warmup W --reps R --output OUT.jsonl`` (one process,
      load excluded, end to end including tokenisation and pooling). Batch-1
      latency: 1000 / (batch-1 sentences/s), i.e. the mean per sentence (the
      host reports no per-request time); the peers' mean is shown too.

    Sentences/s is the median over reps. The report ends with the batch-32
    goal check: ours f16 end to end over the faster transformers fp16 (eager
    or sdpa) and over sentence-transformers fp16. Each system's embeddings are compared
    with transformers eager fp32 (max cosine distance), so fast-but-wrong is
    visible. FLOPs per sentence = 2 x encoder params x tokens + 4 x layers x
    hidden x tokens^2 (QK^T and AV), summed over the workload's unpadded token
    counts: achieved TFLOP/s = useful FLOPs x sentences/s / sentences.

Generation (models from make_models.py: opt-125m, tinyllama)
    Greedy, ``--new-tokens`` (64) new tokens per prompt, eos disabled (the
    models have none; transformers also gets min_new_tokens = max_new_tokens),
    batch 1 over the first ``--bs1-prompts`` (4) prompts and batch 16 over 16
    prompts of varied length (left-padded). transformers: ``generate`` with
    the model loaded in fp16 on the GPU. Ours: ``host bench text-generation
    --precision f16`` (tokens/s = requests/s x new tokens per request; the
    responses' own timings are recorded too). Bandwidth limit: batch x
    measured GB/s / fp16 weight bytes read per decode step (every weight
    except input/position embedding tables not shared with the LM head;
    KV-cache traffic ignored, so it is an upper bound).

A configuration that fails (our host errors, times out, CUDA unavailable)
is recorded with its error text and the run goes on; the exit code is 1 if
any measurement failed (skips for the time budget excepted), else 0.
``--budget-s`` bounds the whole run (default 330 s, to fit ~6 minutes with
start-up): past it the remaining measurements are recorded as skipped. Each
host process also has ``--host-timeout`` (240 s).

The Python peers tokenize with TOKENIZERS_PARALLELISM=true (as
scripts/bench_minilm.py); the host processes get the caller's environment.

Writes PREFIX.json and PREFIX.md naming the card, driver, CUDA, torch and
transformers versions.

Usage::

    python3 scripts/gpu/bench_cuda.py --host .gpu/host --models /tmp/gpu-models \
        --out OUT/bench_cuda [--device cuda] [--quick]

    # locally on the CPU (tiny models from make_models.py --quick; the CPU
    # backend is f32 only, f16 runs are recorded as errors):
    /work/pyenv/ref/bin/python scripts/gpu/bench_cuda.py --host target/release/host \
        --models /tmp/gpu-models-q --out /tmp/bench_q --device cpu --quick
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import (REPO, fmt, host_devices, host_error_text, log, machine, md_escape,
                    quiet_hf, resolve_host, run_cmd, utc_now, versions, write_jsonl,
                    write_outputs)

sys.path.insert(0, str(REPO / "scripts"))
from bench_minilm import _CLAUSES, _OBJECTS, _SUBJECTS, _TAILS, _VERBS  # noqa: E402

# The Python peers tokenize with the fast tokenizer's own parallelism, as in
# scripts/bench_minilm.py (set before tokenizers is imported; common.run_cmd
# gives our host processes the caller's original setting).
os.environ["TOKENIZERS_PARALLELISM"] = "true"

ST_FP16 = "sentence-transformers fp16"
PEERS = [  # (system name, attn_implementation ("st": sentence-transformers), torch dtype name)
    ("transformers eager fp32", "eager", "float32"),
    ("transformers eager fp16", "eager", "float16"),
    ("transformers sdpa fp16", "sdpa", "float16"),
    (ST_FP16, "st", "float16"),
]
# ours precision -> the peers it is compared with
RATIO_PAIRS = {"f32": ["transformers eager fp32"],
               "f16": ["transformers eager fp16", "transformers sdpa fp16", ST_FP16],
               "bf16": ["transformers eager fp16", "transformers sdpa fp16", ST_FP16]}
TRANSFORMERS_FP16 = ["transformers eager fp16", "transformers sdpa fp16"]
GOAL_BATCH = 32
GOAL_RATIO = 3.0


# --------------------------------------------------------------------------
# Workload and budget
# --------------------------------------------------------------------------

def make_sentences(n: int, seed: int = 20240601) -> list[str]:
    """``n`` deterministic sentences of 5-26 words (mean ~14, ~17 BERT tokens)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        words = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
        tail = rng.choice(_TAILS)
        if tail:
            words.append(tail)
        if rng.random() < 0.35:
            words.append(rng.choice(_CLAUSES))
        s = " ".join(words)
        out.append(s[0].upper() + s[1:] + rng.choice([".", ".", "!", "?"]))
    return out


class Budget:
    def __init__(self, seconds: float):
        self.t0 = time.monotonic()
        self.seconds = seconds

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.t0)

    def over(self) -> bool:
        return self.left() <= 0

    def timeout(self, cap: float) -> float:
        """A subprocess timeout: at most ``cap``, and not far past the budget."""
        return max(30.0, min(cap, self.left() + 30.0))


SKIP_BUDGET = "skipped: over the time budget (--budget-s)"


# --------------------------------------------------------------------------
# torch helpers
# --------------------------------------------------------------------------

def torch_setup(device: str):
    """No TF32 for fp32 (true fp32 GEMMs); returns (torch device, error)."""
    import torch

    for fn in (lambda: setattr(torch.backends.cuda.matmul, "allow_tf32", False),
               lambda: setattr(torch.backends.cudnn, "allow_tf32", False),
               lambda: torch.set_float32_matmul_precision("highest")):
        try:
            fn()
        except Exception:  # noqa: BLE001 - API differences between torch versions
            pass
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return None, "torch.cuda is not available (torch " + torch.__version__ + ")"
        return torch.device("cuda"), None
    return torch.device("cpu"), None


def sync(dev) -> None:
    import torch

    if dev is not None and dev.type == "cuda":
        torch.cuda.synchronize()


def free(dev) -> None:
    import gc

    import torch

    gc.collect()
    if dev is not None and dev.type == "cuda":
        torch.cuda.empty_cache()


def wrong_device(served, asked: str) -> bool:
    """Whether the host served on another device family than asked (cuda:0 is cuda)."""
    return str(served).split(":")[0] != asked.split(":")[0].split(",")[0]


def measure_peaks(dev, quick: bool) -> dict:
    """fp16 / fp32 GEMM TFLOP/s and device copy GB/s, measured now."""
    import torch

    out: dict = {"device": str(dev)}
    try:
        out["matmul_allow_tf32"] = bool(torch.backends.cuda.matmul.allow_tf32)
    except Exception:  # noqa: BLE001
        pass
    n = 1024 if (quick or dev.type != "cuda") else 8192
    for name, dtype, iters in (("fp16", torch.float16, 30), ("fp32_no_tf32", torch.float32, 8)):
        try:
            a = torch.randn(n, n, device=dev, dtype=dtype)
            b = torch.randn(n, n, device=dev, dtype=dtype)
            for _ in range(3):
                torch.matmul(a, b)
            sync(dev)
            t = time.perf_counter()
            for _ in range(iters):
                torch.matmul(a, b)
            sync(dev)
            dt = time.perf_counter() - t
            out[f"gemm_{name}_tflops"] = 2 * n**3 * iters / dt / 1e12
            out[f"gemm_{name}_shape"] = f"{n}x{n}x{n} x{iters}"
            del a, b
        except Exception as exc:  # noqa: BLE001
            out[f"gemm_{name}_error"] = f"{type(exc).__name__}: {exc}"
    nbytes = (64 << 20) if (quick or dev.type != "cuda") else (1 << 30)
    try:
        src = torch.empty(nbytes, dtype=torch.uint8, device=dev).random_(0, 255)
        dst = torch.empty_like(src)
        for _ in range(3):
            dst.copy_(src)
        sync(dev)
        iters = 20
        t = time.perf_counter()
        for _ in range(iters):
            dst.copy_(src)
        sync(dev)
        dt = time.perf_counter() - t
        out["copy_gbps"] = 2 * nbytes * iters / dt / 1e9
        out["copy_bytes"] = nbytes
        out["copy_note"] = "device-to-device copy_, read + write bytes counted"
        del src, dst
    except Exception as exc:  # noqa: BLE001
        out["copy_error"] = f"{type(exc).__name__}: {exc}"
    free(dev)
    return out


# --------------------------------------------------------------------------
# Embeddings
# --------------------------------------------------------------------------

def max_cos_dist(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(np.max(1.0 - cos))


def model_flops(model_dir: Path, counts: list[int]) -> dict:
    """Useful FLOPs of the workload (unpadded), from the config and encoder size."""
    import torch
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.from_pretrained(str(model_dir))
    with torch.device("meta"):
        m = AutoModel.from_config(cfg)
    enc = next((getattr(m, a) for a in ("encoder", "transformer") if hasattr(m, a)), m)
    enc_params = sum(p.numel() for p in enc.parameters())
    L, h = cfg.num_hidden_layers, cfg.hidden_size
    per = [2 * enc_params * t + 4 * L * h * t * t for t in counts]
    return {"encoder_params": enc_params, "layers": L, "hidden": h,
            "total_flops": float(sum(per)), "mean_flops_per_sentence": float(np.mean(per)),
            "formula": "2*encoder_params*tokens + 4*layers*hidden*tokens^2 per sentence"}


def no_sdpa_reason(model_dir: Path) -> str | None:
    """Why transformers cannot run this model with sdpa attention, or None."""
    import transformers
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        cls = MODEL_MAPPING[type(AutoConfig.from_pretrained(str(model_dir)))]
    except Exception:  # noqa: BLE001 - let the load itself tell
        return None
    if getattr(cls, "_supports_sdpa", True) is False:
        return (f"skipped: transformers {transformers.__version__} has no sdpa attention for "
                f"{cls.__name__}")
    return None


class Peer:
    """One transformers AutoModel configuration with its tokenizer."""

    def __init__(self, model_dir: Path, attn: str, dtype_name: str, dev, max_len: int):
        import inspect

        import torch
        from transformers import AutoModel, AutoTokenizer

        self.torch = torch
        self.dev = dev
        self.max_len = max_len
        self.tok = AutoTokenizer.from_pretrained(str(model_dir))
        if not self.tok.is_fast:
            raise RuntimeError("no fast tokenizer")
        dtype = getattr(torch, dtype_name)
        kw = dict(dtype=dtype, attn_implementation=attn)
        try:
            model = AutoModel.from_pretrained(str(model_dir), add_pooling_layer=False, **kw)
        except TypeError:  # a model class without a pooler argument
            model = AutoModel.from_pretrained(str(model_dir), **kw)
        self.model = model.to(dev).eval()
        self.attn_implementation = getattr(self.model.config, "_attn_implementation", None)
        params = inspect.signature(self.model.forward).parameters
        self.inputs = set(params)  # the tokenizer outputs the model takes

    def _encode(self, texts):
        enc = self.tok(texts, padding=True, truncation=True, max_length=self.max_len,
                       return_tensors="pt")
        return {k: v.to(self.dev, non_blocking=True) for k, v in enc.items() if k in self.inputs}

    def _pool(self, hidden, mask):
        m = mask.unsqueeze(-1).float()
        pooled = (hidden.float() * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return self.torch.nn.functional.normalize(pooled, p=2, dim=1)

    def embed(self, texts: list[str], bs: int, times: list | None = None) -> np.ndarray:
        """End to end, input order kept; sorted by length when batching.
        ``times`` collects each batch's seconds (per sentence at batch 1)."""
        n = len(texts)
        order = np.argsort([-len(t) for t in texts], kind="stable") if bs > 1 else np.arange(n)
        out = None
        with self.torch.inference_mode():
            for s in range(0, n, bs):
                t0 = time.perf_counter()
                idx = order[s:s + bs]
                enc = self._encode([texts[i] for i in idx])
                hidden = self.model(**enc).last_hidden_state
                e = self._pool(hidden, enc["attention_mask"]).cpu().numpy()
                if times is not None:
                    times.append(time.perf_counter() - t0)
                if out is None:
                    out = np.empty((n, e.shape[1]), dtype=np.float32)
                out[idx] = e
        return out

    def model_only(self, texts: list[str], bs: int, reps: int) -> list[float]:
        """Sentences/s of the forward pass alone on pre-tokenised GPU batches."""
        order = np.argsort([-len(t) for t in texts], kind="stable") if bs > 1 else np.arange(len(texts))
        batches = [self._encode([texts[i] for i in order[s:s + bs]])
                   for s in range(0, len(texts), bs)]
        rates = []
        with self.torch.inference_mode():
            for b in batches[:2]:
                self.model(**b)
            for _ in range(reps):
                sync(self.dev)
                t0 = time.perf_counter()
                for b in batches:
                    self.model(**b)
                sync(self.dev)
                rates.append(len(texts) / (time.perf_counter() - t0))
        return rates


class STPeer:
    """sentence-transformers ``encode`` in half precision (end to end only)."""

    def __init__(self, model_dir: Path, dtype_name: str, dev, max_len: int):
        import torch
        from sentence_transformers import SentenceTransformer

        self.st = SentenceTransformer(str(model_dir), device=str(dev))
        self.st.to(getattr(torch, dtype_name))
        self.st.eval()
        if int(self.st.max_seq_length) != max_len:
            raise RuntimeError(f"SentenceTransformer max_seq_length {self.st.max_seq_length} "
                               f"!= sentence_bert_config.json's {max_len}")
        auto = getattr(self.st[0], "auto_model", None)
        self.attn_implementation = getattr(getattr(auto, "config", None), "_attn_implementation", None)

    def embed(self, texts: list[str], bs: int, times: list | None = None) -> np.ndarray:
        """End to end, input order kept (encode sorts by length itself).
        ``times`` (batch 1) collects each sentence's seconds: one encode per sentence."""
        def enc(t, b):
            e = self.st.encode(t, batch_size=b, convert_to_numpy=True, show_progress_bar=False)
            return np.asarray(e, dtype=np.float32)
        if times is None:
            return enc(texts, bs)
        out = []
        for t in texts:
            t0 = time.perf_counter()
            out.append(enc([t], 1)[0])
            times.append(time.perf_counter() - t0)
        return np.stack(out)

    def model_only(self, texts: list[str], bs: int, reps: int) -> None:
        return None


def bench_peers(args, name: str, model_dir: Path, dev, texts, texts1, ref_holder: dict,
                budget: Budget) -> list[dict]:
    rows = []
    max_len = int(json.loads((model_dir / "sentence_bert_config.json").read_text())["max_seq_length"])
    for system, attn, dtype_name in PEERS:
        base = {"model": name, "system": system}
        if budget.over():
            rows.append({**base, "error": SKIP_BUDGET})
            continue
        skip = no_sdpa_reason(model_dir) if attn == "sdpa" else None
        if skip:
            rows.append({**base, "skipped": skip})
            log(f"  [{system}] {skip}")
            continue
        log(f"  [{system}] loading")
        try:
            if attn == "st":
                peer = STPeer(model_dir, dtype_name, dev, max_len)
            else:
                peer = Peer(model_dir, attn, dtype_name, dev, max_len)
        except Exception as exc:  # noqa: BLE001
            rows.append({**base, "error": f"{type(exc).__name__}: {exc}"[:600]})
            log(f"    error: {rows[-1]['error']}")
            continue
        try:
            for bs in args.batch_sizes:
                work = texts1 if bs == 1 else texts
                peer.embed(work[: max(bs, 64)], bs)  # warm-up
                rates, emb, lat = [], None, []
                for _ in range(args.reps if bs > 1 else args.reps_bs1):
                    t0 = time.perf_counter()
                    emb = peer.embed(work, bs, lat if bs == 1 else None)
                    rates.append(len(work) / (time.perf_counter() - t0))
                row = {**base, "batch_size": bs, "sentences": len(work),
                       "sentences_per_s": statistics.median(rates), "runs_sentences_per_s": rates,
                       "attn_implementation": peer.attn_implementation}
                key = "1" if bs == 1 else "N"  # the two workloads
                if system == "transformers eager fp32":
                    ref_holder.setdefault(key, emb)
                if key in ref_holder:
                    row["max_cos_dist_vs_eager_fp32"] = max_cos_dist(emb, ref_holder[key])
                if bs == 1:  # per-sentence times of the timed passes
                    row["latency_ms_median"] = 1e3 * statistics.median(lat)
                    row["latency_ms_mean"] = 1e3 * statistics.mean(lat)
                mo = peer.model_only(work, bs, args.reps if bs > 1 else args.reps_bs1)
                if mo:
                    row["model_only_sentences_per_s"] = statistics.median(mo)
                rows.append(row)
                log(f"    bs={bs:<3} {row['sentences_per_s']:9.1f} sent/s e2e, "
                    f"{fmt(row.get('model_only_sentences_per_s'), '9.1f', '        -')} model-only"
                    + (f", bs1 median {row['latency_ms_median']:.2f} ms" if bs == 1 else ""))
        except Exception as exc:  # noqa: BLE001
            rows.append({**base, "error": f"{type(exc).__name__}: {exc}"[:600]})
            log(f"    error: {rows[-1]['error']}")
        del peer
        free(dev)
    return rows


def bench_ours_embed(args, name: str, model_dir: Path, tmp: Path, texts, texts1,
                     ref_holder: dict, budget: Budget) -> list[dict]:
    rows = []
    files = {}
    for key, work in (("1", texts1), ("N", texts)):
        files[key] = tmp / f"embed_inputs_{key}.jsonl"
        write_jsonl(files[key], [{"text": t} for t in work])
    for p in args.embed_precisions:
        failed = None
        for bs in args.batch_sizes:
            base = {"model": name, "system": f"ours {p}", "precision": p, "batch_size": bs}
            if failed:
                rows.append({**base, "error": f"same as batch {failed[0]}"})
                continue
            if budget.over():
                rows.append({**base, "error": SKIP_BUDGET})
                continue
            key = "1" if bs == 1 else "N"
            work = texts1 if bs == 1 else texts
            out = tmp / f"ours_{name}_{p}_{bs}.jsonl"
            out.unlink(missing_ok=True)
            cmd = [str(args.host), "bench", "text-embedding", "--model", str(model_dir),
                   "--inputs", str(files[key]), "--batch-size", str(bs), "--device", args.device,
                   "--precision", p, "--warmup", str(args.host_warmup),
                   "--reps", str(args.reps if bs > 1 else args.reps_bs1), "--output", str(out)]
            r = run_cmd(cmd, timeout=budget.timeout(args.host_timeout))
            row = {**base, "sentences": len(work), "cmd": " ".join(cmd), "wall_s": round(r["wall_s"], 1)}
            try:
                stats = json.loads(r["stdout"].strip().splitlines()[-1])["bench"]
            except (IndexError, KeyError, json.JSONDecodeError):
                stats = None
            if r["rc"] != 0 or stats is None:
                row["error"] = host_error_text(r["stderr"], r["rc"])
                if "does not support precision" in row["error"] or "not available" in row["error"]:
                    failed = (bs, row["error"])
            else:
                row["sentences_per_s"] = statistics.median(stats["per_second"])
                row["runs_sentences_per_s"] = stats["per_second"]
                row["load_ms"] = stats.get("load_ms")
                row["mean_batch_size"] = stats.get("mean_batch_size")
                row["served_device"] = stats.get("device")
                row["served_precision"] = stats.get("precision")
                if bs == 1:
                    row["latency_ms_mean"] = 1e3 / row["sentences_per_s"]
                if wrong_device(row["served_device"], args.device):
                    row["error"] = f"served by {row['served_device']}, asked for {args.device}"
                try:
                    lines = [json.loads(ln) for ln in out.read_text().splitlines() if ln.strip()]
                    emb = np.asarray([x["embedding"] for x in lines], dtype=np.float32)
                    if key in ref_holder and emb.shape == ref_holder[key].shape:
                        row["max_cos_dist_vs_eager_fp32"] = max_cos_dist(emb, ref_holder[key])
                except Exception as exc:  # noqa: BLE001
                    row["output_error"] = f"{type(exc).__name__}: {exc}"[:300]
            rows.append(row)
            log(f"  [ours {p}] bs={bs:<3} "
                + (f"{row['sentences_per_s']:9.1f} sent/s (load {fmt(row.get('load_ms'), '.0f')} ms, "
                   f"wall {row['wall_s']} s)" if "sentences_per_s" in row else f"error: {row['error']}"))
    return rows


# --------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------

def decode_weight_bytes(model, bytes_per_param: int = 2) -> int:
    """Weights read per decode step: all but unshared input/position embedding tables."""
    skip = set()
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tied = out is not None and out.weight.data_ptr() == emb.data_ptr()
    for n, p in model.named_parameters():
        if "embed_positions" in n or "wpe" in n:
            skip.add(n)
        elif p.data_ptr() == emb.data_ptr() and not tied:
            skip.add(n)
    return bytes_per_param * sum(p.numel() for n, p in model.named_parameters() if n not in skip)


def hf_generate(torch, model, ids: list[list[int]], bs: int, new: int, pad: int, dev):
    outs, produced = [], 0
    for s in range(0, len(ids), bs):
        chunk = ids[s:s + bs]
        width = max(len(x) for x in chunk)
        x = torch.tensor([[pad] * (width - len(r)) + r for r in chunk], device=dev)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in chunk], device=dev)
        with torch.inference_mode():
            g = model.generate(x, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                               do_sample=False, eos_token_id=None, pad_token_id=pad)
        new_ids = g[:, width:].tolist()
        produced += sum(len(r) for r in new_ids)
        outs.extend(new_ids)
    return outs, produced


def gen_prompts(n: int) -> list[str]:
    rng = random.Random(7)
    base = make_sentences(n, seed=99)
    # Varied lengths: one to three sentences each.
    return [" ".join([base[i]] + rng.sample(base, rng.randint(0, 2))) for i in range(n)]


def bench_generation(args, name: str, model_dir: Path, dev, peaks: dict, tmp: Path,
                     budget: Budget) -> list[dict]:
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM

    rows = []
    tok = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    cfg = AutoConfig.from_pretrained(str(model_dir))
    pad = cfg.pad_token_id if cfg.pad_token_id is not None else 0
    prompts = gen_prompts(args.gen_prompts)
    ids = [tok.encode(p).ids for p in prompts]
    sets = {b: (prompts[: args.bs1_prompts] if b == 1 else prompts) for b in args.gen_batch_sizes}
    info = {"model": name, "prompt_tokens_mean": float(np.mean([len(x) for x in ids])),
            "prompt_tokens_max": max(len(x) for x in ids), "new_tokens": args.new_tokens}

    # transformers fp16 generate
    hf = {}
    weight_bytes = None
    if dev is None:
        for b in args.gen_batch_sizes:
            hf[b] = {"error": "torch device unavailable"}
    elif budget.over():
        for b in args.gen_batch_sizes:
            hf[b] = {"error": SKIP_BUDGET}
    else:
        log(f"  [transformers fp16] loading {name}")
        try:
            model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float16).to(dev).eval()
            info["transformers_attn_implementation"] = getattr(model.config, "_attn_implementation", None)
            weight_bytes = decode_weight_bytes(model, 2)
            info["params"] = sum(p.numel() for p in model.parameters())
            hf_generate(torch, model, ids[:2], 2, 4, pad, dev)  # warm-up
            for b in args.gen_batch_sizes:
                if budget.over():
                    hf[b] = {"error": SKIP_BUDGET}
                    continue
                work = ids[: len(sets[b])]
                rates, outs = [], None
                # Warm-up at this batch and the full length: a shorter one
                # leaves the first measured run several times slower (seen
                # on the H100: 277 then 2868 tok/s at bs16).
                hf_generate(torch, model, work[:b], b, args.new_tokens, pad, dev)
                for _ in range(args.gen_reps):
                    t0 = time.perf_counter()
                    outs, produced = hf_generate(torch, model, work, b, args.new_tokens, pad, dev)
                    rates.append(produced / (time.perf_counter() - t0))
                hf[b] = {"tokens_per_s": statistics.median(rates), "runs_tokens_per_s": rates,
                         "sequences": outs}
                log(f"    bs={b:<3} {hf[b]['tokens_per_s']:9.1f} tok/s")
        except Exception as exc:  # noqa: BLE001
            err = f"{type(exc).__name__}: {exc}"[:600]
            log(f"    error: {err}")
            for b in args.gen_batch_sizes:
                hf.setdefault(b, {"error": err})
        model = None
        free(dev)

    # ours
    ours = {}
    failed = None
    for b in args.gen_batch_sizes:
        if failed:
            ours[b] = {"error": f"same as batch {failed[0]}"}
            continue
        if budget.over():
            ours[b] = {"error": SKIP_BUDGET}
            continue
        inputs = tmp / f"gen_{name}_{b}.jsonl"
        write_jsonl(inputs, [{"prompt": p, "max_new_tokens": args.new_tokens, "do_sample": False}
                             for p in sets[b]])
        out = tmp / f"gen_{name}_{b}_out.jsonl"
        out.unlink(missing_ok=True)
        cmd = [str(args.host), "bench", "text-generation", "--model", str(model_dir),
               "--inputs", str(inputs), "--batch-size", str(b), "--device", args.device,
               "--precision", args.gen_precision, "--warmup", str(args.host_warmup),
               "--reps", str(args.gen_reps), "--output", str(out)]
        r = run_cmd(cmd, timeout=budget.timeout(args.host_timeout))
        o = {"cmd": " ".join(cmd), "wall_s": round(r["wall_s"], 1)}
        try:
            stats = json.loads(r["stdout"].strip().splitlines()[-1])["bench"]
            resp = [json.loads(ln) for ln in out.read_text().splitlines() if ln.strip()]
        except (IndexError, KeyError, json.JSONDecodeError, OSError):
            stats, resp = None, []
        if r["rc"] != 0 or stats is None or not resp or any("error" in x for x in resp):
            bad = next((x["error"] for x in resp if "error" in x), None)
            o["error"] = (f"{bad.get('kind')}: {bad.get('message')}" if bad
                          else host_error_text(r["stderr"], r["rc"]))[:600]
            if "does not support precision" in o["error"] or "not available" in o["error"]:
                failed = (b, o["error"])
        else:
            tokens = [len(x.get("token_ids", [])) for x in resp]
            mean_new = float(np.mean(tokens))
            o["tokens_per_s"] = statistics.median(stats["per_second"]) * mean_new
            o["runs_tokens_per_s"] = [x * mean_new for x in stats["per_second"]]
            o["new_tokens_mean"] = mean_new
            o["load_ms"] = stats.get("load_ms")
            o["served_device"] = stats.get("device")
            o["served_precision"] = stats.get("precision")
            tim = [x.get("timings") or {} for x in resp]
            for k in ("tokens_per_second", "prefill_ms", "decode_ms"):
                vals = [t[k] for t in tim if isinstance(t.get(k), (int, float))]
                if vals:
                    o[f"reported_{k}_mean"] = float(np.mean(vals))
            o["reported_batch_sizes"] = sorted({t.get("batch_size") for t in tim}, key=str)
            o["sequences"] = [x.get("token_ids") for x in resp]
            if wrong_device(o["served_device"], args.device):
                o["error"] = f"served by {o['served_device']}, asked for {args.device}"
        ours[b] = o
        log(f"  [ours {args.gen_precision}] {name} bs={b:<3} "
            + (f"{o['tokens_per_s']:9.1f} tok/s (wall {o['wall_s']} s)" if "tokens_per_s" in o
               else f"error: {o['error']}"))

    gbps = peaks.get("copy_gbps")
    for b in args.gen_batch_sizes:
        row = {**info, "batch_size": b, "prompts": len(sets[b]),
               "transformers": {k: v for k, v in hf.get(b, {}).items() if k != "sequences"},
               "ours": {k: v for k, v in ours.get(b, {}).items() if k != "sequences"},
               "ours_precision": args.gen_precision}
        if weight_bytes:
            row["decode_weight_bytes_fp16"] = weight_bytes
            if gbps:
                row["bandwidth_limit_tokens_per_s"] = b * gbps * 1e9 / weight_bytes
        t_hf = hf.get(b, {}).get("tokens_per_s")
        t_us = ours.get(b, {}).get("tokens_per_s")
        if t_hf and t_us:
            row["ratio_ours_over_transformers"] = t_us / t_hf
        sa, sb = hf.get(b, {}).get("sequences"), ours.get(b, {}).get("sequences")
        if sa and sb and len(sa) == len(sb):
            row["identical_sequences"] = sum(x == y for x, y in zip(sa, sb))
            row["mean_common_prefix"] = float(np.mean([
                next((i for i, (u, v) in enumerate(zip(x, y)) if u != v), min(len(x), len(y)))
                for x, y in zip(sa, sb)]))
        rows.append(row)
    return rows


# --------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------

def compute_ratios(rows: list[dict]) -> list[dict]:
    by = {(r["model"], r["system"], r.get("batch_size")): r for r in rows}
    out = []
    for r in rows:
        if not r["system"].startswith("ours") or "sentences_per_s" not in r:
            continue
        for peer in RATIO_PAIRS.get(r.get("precision"), []):
            q = by.get((r["model"], peer, r["batch_size"]))
            if q and q.get("sentences_per_s"):
                out.append({"model": r["model"], "batch_size": r["batch_size"],
                            "ours": r["system"], "peer": peer,
                            "e2e_ratio": r["sentences_per_s"] / q["sentences_per_s"],
                            "vs_model_only_ratio": (r["sentences_per_s"] / q["model_only_sentences_per_s"]
                                                    if q.get("model_only_sentences_per_s") else None)})
    return out


def goal_check(rows: list[dict], batch: int = GOAL_BATCH) -> list[dict]:
    """Per model and half-precision ours: end to end ratio at ``batch`` over the
    faster transformers fp16 (eager or sdpa) and over sentence-transformers fp16."""
    by = {(r["model"], r["system"], r.get("batch_size")): r for r in rows}
    out = []
    for r in rows:
        if (not r["system"].startswith("ours") or r.get("batch_size") != batch
                or r.get("precision") not in ("f16", "bf16")):
            continue
        g = {"model": r["model"], "batch_size": batch, "ours": r["system"],
             "ours_sentences_per_s": r.get("sentences_per_s"), "goal_ratio": GOAL_RATIO}
        hf = [(by[(r["model"], p, batch)]["sentences_per_s"], p) for p in TRANSFORMERS_FP16
              if by.get((r["model"], p, batch), {}).get("sentences_per_s")]
        if hf:
            g["transformers_fp16_sentences_per_s"], g["transformers_fp16_system"] = max(hf)
        st = by.get((r["model"], ST_FP16, batch), {}).get("sentences_per_s")
        if st:
            g["st_fp16_sentences_per_s"] = st
        if g["ours_sentences_per_s"]:
            if hf:
                g["ratio_vs_transformers_fp16"] = g["ours_sentences_per_s"] / max(hf)[0]
                g["goal_met"] = g["ratio_vs_transformers_fp16"] >= GOAL_RATIO
            if st:
                g["ratio_vs_st_fp16"] = g["ours_sentences_per_s"] / st
        out.append(g)
    return out


def markdown(rep: dict) -> str:
    m, pk = rep["machine"], rep["peaks"]
    v = rep["versions"]
    bss = rep["settings"]["batch_sizes"]
    lines = [
        f"# CUDA benchmark: ours vs transformers on {m['label']}",
        "",
        f"- card: {m.get('gpu') or '-'}; driver {m.get('driver') or '-'}; CUDA (torch) "
        f"{v.get('torch_cuda') or '-'}; torch {v.get('torch')}; transformers {v.get('transformers')}; "
        f"host `--device {rep['device']}`",
        f"- measured peaks: fp16 GEMM {fmt(pk.get('gemm_fp16_tflops'), '.1f')} TFLOP/s, fp32 GEMM "
        f"(TF32 off) {fmt(pk.get('gemm_fp32_no_tf32_tflops'), '.1f')} TFLOP/s "
        f"({pk.get('gemm_fp16_shape', '-')}); device copy {fmt(pk.get('copy_gbps'), '.0f')} GB/s "
        "(read+write)",
        f"- date {rep['date']}; {'QUICK (small models, few reps)' if rep['settings']['quick'] else 'full'}"
        f" run; wall {rep['wall_s']:.0f} s",
    ]
    for name, w in rep["embedding_workloads"].items():
        fl = w.get("flops", {})
        lines += [
            "", f"## Embeddings: {name}", "",
            f"{w['sentences']} sentences (bs1: first {w['sentences_bs1']}), mean "
            f"{w['mean_tokens']:.1f} / max {w['max_tokens']} tokens; encoder "
            f"{fmt(fl.get('encoder_params', 0) / 1e6, '.1f')}M params, "
            f"{fmt(fl.get('mean_flops_per_sentence', 0) / 1e9, '.3f')} GFLOP/sentence (useful, unpadded). "
            f"End to end sentences/s (median of {rep['settings']['reps']} reps, bs1 "
            f"{rep['settings']['reps_bs1']}); TFLOP/s achieved at the largest batch; bs1 latency: "
            "transformers median / mean of per-sentence times, ours mean only (1000 / bs1 sentences/s).",
            "",
            "| system | " + " | ".join(f"bs={b}" for b in bss)
            + " | bs1 latency ms (median / mean) | model-only bs=" + str(bss[-1])
            + " | TFLOP/s | max cos dist vs eager fp32 | note |",
            "|---|" + "---:|" * len(bss) + "---:|---:|---:|---:|---|",
        ]
        rows = [r for r in rep["embedding_results"] if r["model"] == name]
        systems = list(dict.fromkeys(r["system"] for r in rows))
        for s in systems:
            by = {r.get("batch_size"): r for r in rows if r["system"] == s}
            cells = [fmt(by.get(b, {}).get("sentences_per_s"), ".1f",
                         none="error" if "error" in by.get(b, {}) else "-") for b in bss]
            r1 = by.get(1, {})
            lat = f"{fmt(r1.get('latency_ms_median'), '.2f')} / {fmt(r1.get('latency_ms_mean'), '.2f')}"
            big = by.get(bss[-1], {})
            tf = (fl["total_flops"] * big["sentences_per_s"] / w["sentences"] / 1e12
                  if big.get("sentences_per_s") and fl.get("total_flops") else None)
            dists = [r.get("max_cos_dist_vs_eager_fp32") for r in by.values()
                     if r.get("max_cos_dist_vs_eager_fp32") is not None]
            errs = list(dict.fromkeys(r.get("error") or r.get("skipped") for r in by.values()
                                      if r.get("error") or r.get("skipped")))
            lines.append(f"| {s} | " + " | ".join(cells) + f" | {lat} | "
                         f"{fmt(big.get('model_only_sentences_per_s'), '.1f')} | {fmt(tf, '.2f')} | "
                         f"{fmt(max(dists) if dists else None, '.1e')} | "
                         f"{md_escape('; '.join(errs))[:300]} |")
    if rep["ratios"]:
        lines += ["", "## Embedding ratios (ours / peer, end to end; and ours e2e / peer model-only)", "",
                  "| model | batch | ours | peer | e2e ratio | vs peer model-only |",
                  "|---|---:|---|---|---:|---:|"]
        for r in rep["ratios"]:
            lines.append(f"| {r['model']} | {r['batch_size']} | {r['ours']} | {r['peer']} | "
                         f"{r['e2e_ratio']:.2f}x | {fmt(r['vs_model_only_ratio'], '.2f')}x |")
    def ratio(x):
        return "-" if x is None else f"{x:.2f}x"

    if rep.get("goal_check"):
        lines += ["", f"## Goal check: ours half precision vs fp16 peers, end to end at bs={GOAL_BATCH} "
                  f"(goal: >= {GOAL_RATIO:g}x the faster transformers fp16)", "",
                  "| model | ours | ours sent/s | transformers fp16 (faster) sent/s | ratio | "
                  "sentence-transformers fp16 sent/s | ratio | goal |",
                  "|---|---|---:|---:|---:|---:|---:|---|"]
        for g in rep["goal_check"]:
            met = {True: "met", False: "NOT met"}.get(g.get("goal_met"), "-")
            hf_sys = g.get("transformers_fp16_system", "").replace("transformers ", "")
            lines.append(
                f"| {g['model']} | {g['ours']} | {fmt(g.get('ours_sentences_per_s'), '.1f')} | "
                f"{fmt(g.get('transformers_fp16_sentences_per_s'), '.1f')}"
                + (f" ({hf_sys})" if hf_sys else "") + " | "
                f"{ratio(g.get('ratio_vs_transformers_fp16'))} | "
                f"{fmt(g.get('st_fp16_sentences_per_s'), '.1f')} | {ratio(g.get('ratio_vs_st_fp16'))} | "
                f"{met} |")
    if rep["generation_results"]:
        lines += ["", f"## Generation: greedy, {rep['settings']['new_tokens']} new tokens, "
                  f"transformers fp16 `generate` vs ours `--precision {rep['settings']['gen_precision']}`",
                  "",
                  "| model | batch | prompts | transformers tok/s | ours tok/s | ours/transformers | "
                  "bandwidth limit tok/s | ours % of limit | transformers % of limit | identical seqs "
                  "| note |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in rep["generation_results"]:
            lim = r.get("bandwidth_limit_tokens_per_s")
            th, tu = r["transformers"].get("tokens_per_s"), r["ours"].get("tokens_per_s")
            note = "; ".join(x for x in (r["transformers"].get("error"), r["ours"].get("error")) if x)
            ident = (f"{r['identical_sequences']}/{r['prompts']}" if "identical_sequences" in r else "-")
            lines.append(
                f"| {r['model']} | {r['batch_size']} | {r['prompts']} | {fmt(th, '.1f')} | "
                f"{fmt(tu, '.1f')} | "
                f"{fmt(r.get('ratio_ours_over_transformers'), '.2f')} | {fmt(lim, '.0f')} | "
                f"{fmt(100 * tu / lim if tu and lim else None, '.1f')} | "
                f"{fmt(100 * th / lim if th and lim else None, '.1f')} | {ident} | {md_escape(note)[:300]} |")
        lines += ["", "Bandwidth limit = batch x measured copy GB/s / fp16 weight bytes per decode step "
                  "(KV cache ignored). Identical sequences: greedy fp16 ids equal to transformers' "
                  "(informational; random weights make near-ties common)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", required=True)
    ap.add_argument("--models", required=True, type=Path, help="make_models.py OUTDIR")
    ap.add_argument("--out", required=True, help="output prefix")
    ap.add_argument("--device", default="cuda", help="host --device, and where torch runs")
    ap.add_argument("--quick", action="store_true", help="small workload, few reps")
    ap.add_argument("--embed-models", default="minilm,bge-base,mpnet-base")
    ap.add_argument("--gen-models", default="opt-125m,tinyllama")
    ap.add_argument("--batch-sizes", default="1,32,256")
    ap.add_argument("--embed-precisions", default="f32,f16")
    ap.add_argument("--sentences", type=int, default=None, help="default 2048 (quick 128)")
    ap.add_argument("--bs1-sentences", type=int, default=None, help="default 256 (quick 16)")
    ap.add_argument("--reps", type=int, default=None, help="timed reps, default 5 (quick 2)")
    ap.add_argument("--reps-bs1", type=int, default=None, help="timed reps at bs1, default 3 (quick 1)")
    ap.add_argument("--host-warmup", type=int, default=1)
    ap.add_argument("--gen-precision", default="f16")
    ap.add_argument("--gen-batch-sizes", default="1,16")
    ap.add_argument("--new-tokens", type=int, default=None, help="default 64 (quick 8)")
    ap.add_argument("--gen-prompts", type=int, default=16)
    ap.add_argument("--bs1-prompts", type=int, default=None, help="default 4 (quick 2)")
    ap.add_argument("--gen-reps", type=int, default=None, help="default 3 (quick 1)")
    ap.add_argument("--host-timeout", type=float, default=240, help="seconds per host process")
    ap.add_argument("--budget-s", type=float, default=330, help="stop measuring after this")
    ap.add_argument("--skip-embed", action="store_true")
    ap.add_argument("--skip-gen", action="store_true")
    args = ap.parse_args(argv)
    q = args.quick
    args.sentences = args.sentences or (128 if q else 2048)
    args.bs1_sentences = args.bs1_sentences or (16 if q else 256)
    args.reps = args.reps or (2 if q else 5)
    args.reps_bs1 = args.reps_bs1 or (1 if q else 3)
    args.new_tokens = args.new_tokens or (8 if q else 64)
    args.bs1_prompts = args.bs1_prompts or (2 if q else 4)
    args.gen_reps = args.gen_reps or (1 if q else 3)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    args.gen_batch_sizes = [int(b) for b in args.gen_batch_sizes.split(",") if b.strip()]
    args.embed_precisions = [p.strip() for p in args.embed_precisions.split(",") if p.strip()]
    args.host = resolve_host(args.host)
    budget = Budget(args.budget_s)
    t_start = time.monotonic()

    quiet_hf()
    dev, dev_err = torch_setup(args.device)
    log(f"bench on {args.device} (torch device {dev or dev_err}); budget {args.budget_s:.0f} s")
    peaks: dict = {}
    if dev is not None:
        log("peaks: GEMM and device copy")
        peaks = measure_peaks(dev, q)
        log(f"  fp16 GEMM {fmt(peaks.get('gemm_fp16_tflops'), '.1f')} TFLOP/s, fp32 GEMM "
            f"{fmt(peaks.get('gemm_fp32_no_tf32_tflops'), '.1f')} TFLOP/s, copy "
            f"{fmt(peaks.get('copy_gbps'), '.0f')} GB/s")
    else:
        peaks = {"error": dev_err}

    texts = make_sentences(args.sentences)
    texts1 = texts[: args.bs1_sentences]
    embed_rows, workloads, gen_rows = [], {}, []
    with tempfile.TemporaryDirectory(prefix="bench_cuda_") as tmpdir:
        tmp = Path(tmpdir)
        if not args.skip_embed:
            for name in [n.strip() for n in args.embed_models.split(",") if n.strip()]:
                d = args.models / name
                if not (d / "config.json").is_file():
                    embed_rows.append({"model": name, "system": "-", "error":
                                       f"{d} missing (run scripts/gpu/make_models.py)"})
                    continue
                log(f"embeddings: {name}")
                from transformers import AutoTokenizer

                tok = AutoTokenizer.from_pretrained(str(d))
                max_len = int(json.loads((d / "sentence_bert_config.json").read_text())["max_seq_length"])
                counts = [len(x) for x in tok(texts, truncation=True, max_length=max_len)["input_ids"]]
                workloads[name] = {"sentences": len(texts), "sentences_bs1": len(texts1),
                                   "mean_tokens": float(np.mean(counts)), "max_tokens": max(counts),
                                   "flops": model_flops(d, counts)}
                ref: dict = {}
                if dev is not None:
                    embed_rows += bench_peers(args, name, d, dev, texts, texts1, ref, budget)
                else:
                    embed_rows.append({"model": name, "system": "transformers", "error": dev_err})
                embed_rows += bench_ours_embed(args, name, d, tmp, texts, texts1, ref, budget)
        if not args.skip_gen:
            for name in [n.strip() for n in args.gen_models.split(",") if n.strip()]:
                d = args.models / name
                if not (d / "config.json").is_file():
                    gen_rows.append({"model": name, "batch_size": "-", "prompts": 0,
                                     "transformers": {"error": f"{d} missing"}, "ours": {}})
                    continue
                log(f"generation: {name}")
                gen_rows += bench_generation(args, name, d, dev, peaks, tmp, budget)

    settings = {k: getattr(args, k) for k in (
        "quick", "sentences", "bs1_sentences", "reps", "reps_bs1", "host_warmup", "batch_sizes",
        "embed_precisions", "gen_precision", "gen_batch_sizes", "new_tokens", "gen_prompts",
        "bs1_prompts", "gen_reps", "budget_s", "host_timeout")}
    rep = {
        "benchmark": "CUDA: host vs transformers (embeddings, generation) with measured peaks",
        "generator": "scripts/gpu/bench_cuda.py",
        "date": utc_now(),
        "device": args.device,
        "machine": machine(args.device),
        "host_devices": host_devices(args.host),
        "versions": versions(),
        "settings": settings,
        "peaks": peaks,
        "embedding_workloads": workloads,
        "embedding_results": embed_rows,
        "ratios": compute_ratios(embed_rows),
        "goal_check": goal_check(embed_rows),
        "generation_results": gen_rows,
        "wall_s": time.monotonic() - t_start,
    }
    errors = [e for e in iter_errors(rep) if e != SKIP_BUDGET]
    rep["errors"] = len(errors)
    jp, mp = write_outputs(args.out, rep, markdown(rep))
    log(f"wrote {jp} and {mp}")
    print(mp.read_text())
    if errors:
        log(f"{len(errors)} measurement(s) failed (see the notes); exit 1")
    return 1 if errors else 0


def iter_errors(rep: dict):
    """Every recorded error text of the report."""
    if rep["peaks"].get("error"):
        yield rep["peaks"]["error"]
    for r in rep["embedding_results"]:
        if r.get("error"):
            yield r["error"]
    for r in rep["generation_results"]:
        for side in ("transformers", "ours"):
            if r.get(side, {}).get("error"):
                yield r[side]["error"]


if __name__ == "__main__":
    sys.exit(main())
