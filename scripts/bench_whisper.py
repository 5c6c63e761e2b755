"""Whisper speech recognition benchmark: `host bench automatic-speech-recognition`
vs the transformers ASR pipeline, same machine, same clips, in one script;
seconds of audio transcribed per second of wall time (real-time factor).

Models: whisper-tiny's and whisper-small's real architectures (vocabulary
51865, 80 mel bins, 1500 / 448 positions) with random weights (seed 0) and a
synthetic byte-level tokenizer of the real size, saved to --work. The end of
text is suppressed in their generation config, so every clip generates
exactly --new-tokens tokens in both systems (greedy, language given: no
detection step). Clips: --clips synthetic speech-like signals of 30 s
(harmonic tones with moving pitch, noise, pauses) as 16-bit WAV.

Usage: python3 scripts/bench_whisper.py [--device cpu|cuda] [--precision f32|f16]
       [--new-tokens 64] [--clips 16] [--batches 1,16] [--reps 2]
       [--models whisper-tiny,whisper-small] [--out-prefix results/bench_whisper_cpu]
"""

import argparse
import base64
import datetime
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import torch
import transformers as tf
from transformers.models.whisper.tokenization_whisper import LANGUAGES

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000
SECONDS = 30.0
CONFIGS = {
    "whisper-tiny": dict(d_model=384, encoder_layers=4, decoder_layers=4, encoder_attention_heads=6,
                         decoder_attention_heads=6, encoder_ffn_dim=1536, decoder_ffn_dim=1536),
    "whisper-small": dict(d_model=768, encoder_layers=12, decoder_layers=12, encoder_attention_heads=12,
                          decoder_attention_heads=12, encoder_ffn_dim=3072, decoder_ffn_dim=3072),
}


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    return platform.processor()


def clip(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(SECONDS * RATE)) / RATE
    pitch = 120 + 80 * np.sin(2 * np.pi * (0.5 + 0.1 * seed) * t)
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 6)) * (np.sin(2 * np.pi * 2.5 * t) > -0.4)
    x = x + 0.05 * rng.standard_normal(len(t))
    return (0.3 * x / np.abs(x).max()).astype(np.float32)


def wav_b64(x: np.ndarray) -> str:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes())
    return base64.b64encode(buf.getvalue()).decode()


def tokenizer():
    """A byte-level tokenizer with Whisper's real vocabulary layout and size."""
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    while len(vocab) < 50257:
        vocab[f"\u0120w{len(vocab)}"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    tok = tf.WhisperTokenizer(vocab=vocab, merges=[], model_max_length=448, pad_token="<|endoftext|>")
    langs = list(LANGUAGES)[:99]
    specials = ["<|startoftranscript|>"] + [f"<|{c}|>" for c in langs]
    specials += ["<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>",
                 "<|notimestamps|>"]
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.add_tokens(["<|%.2f|>" % (i * 0.02) for i in range(1501)])
    assert len(tok) == 51865, len(tok)
    return tok, langs


def make_model(work: Path, name: str) -> Path:
    out = work / f"{name}-random"
    if (out / "model.safetensors").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    tok, langs = tokenizer()
    t = tok.convert_tokens_to_ids
    eot = t("<|endoftext|>")
    torch.manual_seed(0)
    cfg = tf.WhisperConfig(vocab_size=51865, num_mel_bins=80, max_source_positions=1500, max_target_positions=448,
                           decoder_start_token_id=t("<|startoftranscript|>"), bos_token_id=eot, eos_token_id=eot,
                           pad_token_id=eot, **CONFIGS[name])
    model = tf.WhisperForConditionalGeneration(cfg).eval()
    model.generation_config = tf.GenerationConfig(
        decoder_start_token_id=t("<|startoftranscript|>"), bos_token_id=eot, eos_token_id=eot, pad_token_id=eot,
        max_length=448, suppress_tokens=[eot], begin_suppress_tokens=[220, eot],
        lang_to_id={f"<|{c}|>": t(f"<|{c}|>") for c in langs},
        task_to_id={"transcribe": t("<|transcribe|>"), "translate": t("<|translate|>")},
        is_multilingual=True, no_timestamps_token_id=t("<|notimestamps|>"),
        prev_sot_token_id=t("<|startofprev|>"), max_initial_timestamp_index=50)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    tf.WhisperFeatureExtractor(feature_size=80).save_pretrained(str(out))
    return out


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def bench_transformers(model_dir: Path, clips: list[np.ndarray], bs: int, new: int, reps: int, device: str,
                       dtype) -> tuple[list[float], list[list[int]]]:
    pipe = tf.pipeline("automatic-speech-recognition", model=str(model_dir), device=device, dtype=dtype)
    kw = dict(language="en", task="transcribe", num_beams=1, max_new_tokens=new)
    rates, texts = [], []
    for rep in range(reps + 1):
        sync()
        t = time.perf_counter()
        out = pipe([c.copy() for c in clips], batch_size=bs, generate_kwargs=kw)
        sync()
        if rep > 0:
            rates.append(len(clips) * SECONDS / (time.perf_counter() - t))
        texts = [o["text"] for o in out]
    del pipe
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rates, texts


def bench_ours(host: str, model_dir: Path, work: Path, clips: list[str], bs: int, reps: int, device: str,
               precision: str, options: dict) -> tuple[list[float], list[str]]:
    """`host bench automatic-speech-recognition` on `clips` (base64 WAV), each
    request `{"audio": clip, **options}`: real-time factors and texts."""
    inputs = work / "inputs.jsonl"
    inputs.write_text("".join(json.dumps({"audio": c, **options}) + "\n" for c in clips))
    out = work / f"out_{bs}.jsonl"
    cmd = [host, "bench", "automatic-speech-recognition", "--model", str(model_dir), "--inputs", str(inputs),
           "--batch-size", str(bs), "--warmup", "1", "--reps", str(reps), "--output", str(out),
           "--device", device, "--precision", precision]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"host failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])["bench"]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    if any("error" in r for r in lines):
        sys.exit(f"host answered errors: {[r for r in lines if 'error' in r][:2]}")
    return [r * SECONDS for r in stats["per_second"]], [r["text"] for r in lines]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host-bin", default=str(ROOT / "target/release/host"))
    ap.add_argument("--work", default="/tmp/host-bench-whisper")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--models", default="whisper-tiny,whisper-small")
    ap.add_argument("--out-prefix", default="results/bench_whisper_cpu")
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    torch_device = "cuda" if args.device.startswith("cuda") else "cpu"
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    clips = [clip(i) for i in range(args.clips)]
    encoded = [wav_b64(c) for c in clips]
    # The pipeline gets what the WAV files hold (16-bit samples).
    clips = [np.round(c * 32767).astype(np.float32) / 32768.0 for c in clips]
    rows = []
    for name in args.models.split(","):
        model_dir = make_model(work, name)
        for bs in (int(b) for b in args.batches.split(",")):
            hf_rates, hf_text = bench_transformers(model_dir, clips, bs, args.new_tokens, args.reps, torch_device,
                                                   dtype)
            options = {"language": "en", "task": "transcribe", "num_beams": 1, "max_new_tokens": args.new_tokens}
            our_rates, our_text = bench_ours(args.host_bin, model_dir, work, encoded, bs, args.reps, args.device,
                                             args.precision, options)
            row = {"model": name, "batch_size": bs,
                   "transformers_realtime": statistics.median(hf_rates),
                   "ours_realtime": statistics.median(our_rates),
                   "identical_texts": sum(a == b for a, b in zip(hf_text, our_text)), "clips": len(clips)}
            row["ratio"] = row["ours_realtime"] / row["transformers_realtime"]
            rows.append(row)
            print(row, file=sys.stderr, flush=True)
    report = {
        "machine": machine(), "os": platform.platform(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "new_tokens": args.new_tokens, "ours": f"--device {args.device} --precision {args.precision}",
        "transformers_dtype": str(dtype), "versions": {"torch": torch.__version__, "transformers": tf.__version__},
        "rows": rows,
    }
    Path(args.out_prefix + ".json").write_text(json.dumps(report, indent=2))
    lines = [
        "# Whisper speech recognition: host vs the transformers ASR pipeline",
        "",
        f"- machine: {report['machine']}",
        f"- models: whisper-tiny and whisper-small architectures, random weights; {len(clips)} clips of "
        f"{SECONDS:.0f} s, {args.new_tokens} new tokens each (end of text suppressed), greedy, language given",
        f"- ours: `host bench automatic-speech-recognition {report['ours']}` (WAV decoding, log-mel features "
        f"and decoding in the sandbox included); transformers: `pipeline(\"automatic-speech-recognition\")` "
        f"in {dtype} on {torch_device} (feature extraction included)",
        f"- date: {report['date']}; median of {args.reps} runs after a warm-up, in process",
        "",
        "| model | batch | transformers (x real time) | ours (x real time) | ours/transformers | identical texts |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch_size']} | {r['transformers_realtime']:.1f} | "
                     f"{r['ours_realtime']:.1f} | {r['ratio']:.2f}x | {r['identical_texts']}/{r['clips']} |")
    Path(args.out_prefix + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
