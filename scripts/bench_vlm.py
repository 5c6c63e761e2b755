"""Vision-language generation benchmark: `host run text-generation` vs
transformers `generate` on llava-interleave-qwen-0.5b's real architecture
(SigLIP so400m tower at 384x384 -> 729 image tokens, projector, Qwen2-0.5B
decoder, vocabulary 151936) with random weights (seed 0), same machine, same
run: one image, greedy, --new-tokens tokens (no eos, so both produce all of
them).

Reported per system: time to first token (the prefill: image preprocessing,
vision tower, projector, prompt and one token: a request with
max_new_tokens=1) and decode tokens/s after the
first token, from the difference of a 1-token and an N-token request
(transformers `generate`; ours `host bench`, in process). Both load once
and run a warm-up first. Token identity is reported (fp32: expected identical).

Usage: python3 scripts/bench_vlm.py [--device cpu|openvino|cuda]
       [--precision f32|f16|bf16] [--peer-dtype float32|float16|bfloat16]
       [--peer-device cpu|cuda] [--new-tokens 64] [--out-prefix results/bench_vlm_cpu]
"""

import argparse
import base64
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from PIL import Image
from transformers import (LlavaConfig, LlavaForConditionalGeneration, PreTrainedTokenizerFast, Qwen2Config,
                          SiglipVisionConfig)
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests/fixtures/tiny-llava"
IMAGE = ROOT / "tests/fixtures/images/gradient_64x48.png"
PROMPT = "<image>\nDescribe the picture in detail."


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
    return platform.processor()


def make_model(work: Path) -> Path:
    out = work / "llava-interleave-qwen-0.5b-random"
    if (out / "model.safetensors").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    tok = json.loads((TINY / "tokenizer_config.json").read_text())
    vision = SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=26,
                                num_attention_heads=16, image_size=384, patch_size=14,
                                vision_use_head=False)
    text = Qwen2Config(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                       num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
                       rope_theta=1000000.0, tie_word_embeddings=True, eos_token_id=None, bos_token_id=None)
    image_token = PreTrainedTokenizerFast(tokenizer_file=str(TINY / "tokenizer.json")).convert_tokens_to_ids("<image>")
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token,
                      vision_feature_layer=-1, vision_feature_select_strategy="full",
                      projector_hidden_act="gelu", tie_word_embeddings=True)
    model = LlavaForConditionalGeneration(cfg).eval()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    model.save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(TINY / f, out / f)
    del tok
    proc = SiglipImageProcessorPil(size={"height": 384, "width": 384}, resample=3, image_mean=[0.5] * 3,
                                   image_std=[0.5] * 3)
    proc.save_pretrained(out)
    (out / "processor_config.json").write_text(json.dumps({
        "processor_class": "LlavaProcessor", "patch_size": 14, "vision_feature_select_strategy": "full",
        "num_additional_image_tokens": 0, "image_token": "<image>"}, indent=2))
    return out


def peer_inputs(model_dir: Path, device: str, dtype):
    tok = PreTrainedTokenizerFast(tokenizer_file=str(model_dir / "tokenizer.json"))
    proc = SiglipImageProcessorPil.from_pretrained(str(model_dir))
    t0 = time.perf_counter()
    pixels = proc(Image.open(IMAGE).convert("RGB"), return_tensors="pt")["pixel_values"]
    n = (384 // 14) ** 2
    ids = tok(PROMPT.replace("<image>", "<image>" * n), add_special_tokens=True)["input_ids"]
    pre_s = time.perf_counter() - t0
    return (torch.tensor([ids], device=device), pixels.to(device=device, dtype=dtype), pre_s)


def bench_transformers(model_dir: Path, new: int, reps: int, device: str, dtype_name: str):
    dtype = getattr(torch, dtype_name)
    model = LlavaForConditionalGeneration.from_pretrained(model_dir, dtype=dtype).to(device).eval()

    def run(n: int):
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        sync()
        t = time.perf_counter()
        ids, pixels, _ = peer_inputs(model_dir, device, dtype)
        with torch.no_grad():
            g = model.generate(input_ids=ids, pixel_values=pixels, attention_mask=torch.ones_like(ids),
                               max_new_tokens=n, min_new_tokens=n, do_sample=False, eos_token_id=None,
                               pad_token_id=0)
        sync()
        return time.perf_counter() - t, g[0, ids.shape[1]:].tolist()

    run(2)
    firsts, fulls, out = [], [], []
    for _ in range(reps):
        firsts.append(run(1)[0])
        t, out = run(new)
        fulls.append(t)
    ttft = statistics.median(firsts)
    decode = (new - 1) / max(statistics.median(fulls) - ttft, 1e-9)
    return ttft, decode, out


def bench_ours(host: str, model_dir: Path, work: Path, new: int, reps: int, device: str, precision: str):
    """Per-request latency of `host bench` (one request per call, in
    process, after a warm-up pass) at 1 and at `new` new tokens."""
    image = base64.b64encode(IMAGE.read_bytes()).decode()

    def run(n: int):
        inputs = work / f"vlm_requests_{n}.jsonl"
        inputs.write_text(json.dumps({"prompt": PROMPT, "image": image, "max_new_tokens": n}) + "\n")
        out = work / f"vlm_out_{n}.jsonl"
        cmd = [host, "bench", "text-generation", "--model", str(model_dir), "--inputs", str(inputs),
               "--batch-size", "1", "--warmup", "1", "--reps", str(reps), "--output", str(out),
               "--device", device, "--precision", precision]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"host failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
        stats = json.loads(proc.stdout.strip().splitlines()[-1])["bench"]
        return 1.0 / stats["median_per_second"], json.loads(out.read_text().splitlines()[0])["token_ids"]

    ttft, _ = run(1)
    full, tokens = run(new)
    return ttft, (new - 1) / max(full - ttft, 1e-9), tokens


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host-bin", default=str(ROOT / "target/release/host"))
    ap.add_argument("--work", default="/tmp/host-bench-vlm")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--peer-device", default=None, help="default: cuda when --device cuda, else cpu")
    ap.add_argument("--peer-dtype", default="float32")
    ap.add_argument("--out-prefix", default="results/bench_vlm_cpu")
    ap.add_argument("--note", default="", help="a line about the run's conditions for the report")
    args = ap.parse_args()
    peer_device = args.peer_device or ("cuda" if args.device == "cuda" else "cpu")
    if peer_device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    model_dir = make_model(work)
    hf_ttft, hf_decode, hf_out = bench_transformers(model_dir, args.new_tokens, args.reps, peer_device,
                                                    args.peer_dtype)
    print(f"transformers: ttft {hf_ttft:.3f} s, decode {hf_decode:.1f} tok/s", file=sys.stderr)
    our_ttft, our_decode, our_out = bench_ours(args.host_bin, model_dir, work, args.new_tokens, args.reps,
                                               args.device, args.precision)
    print(f"ours: ttft {our_ttft:.3f} s, decode {our_decode:.1f} tok/s", file=sys.stderr)
    same = next((i for i, (a, b) in enumerate(zip(hf_out, our_out)) if a != b), None)
    report = {
        "machine": machine(), "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "model": "llava-interleave-qwen-0.5b architecture (SigLIP so400m 384, Qwen2-0.5B), random weights",
        "new_tokens": args.new_tokens, "ours": f"--device {args.device} --precision {args.precision}",
        "transformers": f"{peer_device} {args.peer_dtype}", "versions": {"torch": torch.__version__},
        "transformers_ttft_s": hf_ttft, "ours_ttft_s": our_ttft, "ttft_ratio": hf_ttft / our_ttft,
        "transformers_decode_tok_s": hf_decode, "ours_decode_tok_s": our_decode,
        "decode_ratio": our_decode / hf_decode,
        "identical_tokens": same is None and len(hf_out) == len(our_out),
        "first_difference": same,
    }
    Path(args.out_prefix + ".json").write_text(json.dumps(report, indent=2))
    lines = [
        "# Vision-language generation: host vs transformers generate",
        "",
        f"- machine: {report['machine']}",
        f"- model: {report['model']}; one image, prompt `{PROMPT!r}`, {args.new_tokens} new tokens, greedy",
        f"- ours: `host bench text-generation {report['ours']}`; transformers `generate` on {report['transformers']}",
        f"- date: {report['date']}; median of {args.reps} runs after a warm-up; scripts/bench_vlm.py",
        "",
        "| | transformers | ours | ratio (ours faster by) |",
        "|---|---:|---:|---:|",
        f"| time to first token (s) | {hf_ttft:.3f} | {our_ttft:.3f} | {report['ttft_ratio']:.2f}x |",
        f"| decode tok/s (bs1) | {hf_decode:.1f} | {our_decode:.1f} | {report['decode_ratio']:.2f}x |",
        "",
        f"Tokens identical to transformers: {'yes' if report['identical_tokens'] else f'no (first difference at {same})'}.",
    ]
    if args.note:
        lines += ["", f"Note: {args.note}"]
        report["note"] = args.note
        Path(args.out_prefix + ".json").write_text(json.dumps(report, indent=2))
    Path(args.out_prefix + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
