"""Image and video benchmark: `host bench` vs the transformers pipeline on the
real architectures of ViT-base/16 (image-classification), CLIP ViT-B/32
(zero-shot-image-classification) and VideoMAE-base (video-classification,
16 frames) with random weights (seed 0), same machine, same run, end to end:
image decoding and preprocessing are included on both sides.

Inputs: --images synthetic 640x480 JPEG photos (gradients, shapes and noise,
seeded) sent base64 to ours and as PIL images to the pipeline (which still
converts and preprocesses them; it does not decode JPEG bytes: a small
advantage to transformers). VideoMAE: 16 such frames per clip as PNG; the peer
is its image processor plus the model (the video pipeline wants a video file
and a video decoder), ours decodes the 16 PNGs in the sandbox.

Reported per model and batch size: images (clips) per second of both and the
ratio, and whether the top-1 labels agree (fp32: expected identical; reduced
precision can flip near-ties on random weights).

Usage: python3 scripts/bench_vision.py [--device cpu|cuda] [--precision f32|f16]
       [--batches 1,16] [--images 32] [--reps 3] [--models vit,clip,videomae]
       [--out-prefix results/bench_vision_cpu]
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
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
CLIP_TOKENIZER = ROOT / "tests/fixtures/tiny-clip"
LABELS = ["a photo of a cat", "a photo of a dog", "a diagram", "a landscape", "text on paper"]


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip() + f", {os.cpu_count()} cores"
    return platform.processor()


def photo(seed: int, w: int = 640, h: int = 480) -> Image.Image:
    """A seeded synthetic photo: a colour gradient, shapes and noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], -1)
    noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    im = Image.fromarray(noisy)
    d = ImageDraw.Draw(im)
    for _ in range(6):
        x0, y0 = int(rng.integers(0, w - 80)), int(rng.integers(0, h - 80))
        s = int(rng.integers(30, 160))
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        (d.ellipse if rng.random() < 0.5 else d.rectangle)([x0, y0, x0 + s, y0 + s], fill=colour)
    return im


def encoded(im: Image.Image, fmt: str) -> str:
    buf = io.BytesIO()
    im.save(buf, format=fmt, quality=90) if fmt == "JPEG" else im.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def make_vit(out: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil
    cfg = ViTConfig(num_labels=1000, id2label={i: f"class_{i}" for i in range(1000)})
    ViTForImageClassification(cfg).eval().save_pretrained(out)
    ViTImageProcessorPil(size={"height": 224, "width": 224}, resample=2, image_mean=[0.5] * 3,
                         image_std=[0.5] * 3).save_pretrained(out)


def make_clip(out: Path) -> None:
    import shutil
    from transformers import CLIPConfig, CLIPModel
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    from transformers import AutoTokenizer
    # logit_scale as trained CLIP checkpoints have it (100): random towers then
    # give distinct, not uniform, candidate scores. The text tower pools at
    # the end-of-text token: its id must be the tokenizer's (else both sides
    # pool at position 0 and every hypothesis gets the same embedding).
    tok = AutoTokenizer.from_pretrained(CLIP_TOKENIZER)
    text = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    CLIPModel(CLIPConfig(logit_scale_init_value=4.6052, text_config=text)).eval().save_pretrained(out)
    CLIPImageProcessorPil().save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(CLIP_TOKENIZER / f, out / f)


def make_videomae(out: Path) -> None:
    from transformers import VideoMAEConfig, VideoMAEForVideoClassification
    from transformers.models.videomae.image_processing_pil_videomae import VideoMAEImageProcessorPil
    cfg = VideoMAEConfig(num_labels=400, id2label={i: f"action_{i}" for i in range(400)})
    VideoMAEForVideoClassification(cfg).eval().save_pretrained(out)
    VideoMAEImageProcessorPil().save_pretrained(out)


MODELS = {
    # name: (maker, our skill, pipeline task, what one input is)
    "vit": (make_vit, "image-classification", "image-classification", "image"),
    "clip": (make_clip, "zero-shot-image-classification", "zero-shot-image-classification", "image"),
    "videomae": (make_videomae, "video-classification", None, "clip"),
}


def model_dir(work: Path, name: str) -> Path:
    out = work / f"{name}-random"
    if not (out / "model.safetensors").exists():
        out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        MODELS[name][0](out)
    return out


def top1(answer) -> str:
    """The top label of one pipeline or skill answer."""
    if isinstance(answer, dict):
        answer = answer.get("labels") or answer.get("scores") or answer.get("predictions") or answer
    if isinstance(answer, list) and answer and isinstance(answer[0], list):
        answer = answer[0]
    best = max(answer, key=lambda a: a["score"])
    return best["label"]


def bench_peer(name: str, path: Path, inputs, batch: int, reps: int, device: str, dtype):
    from transformers import AutoImageProcessor, VideoMAEForVideoClassification, pipeline

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if name == "videomae":
        proc = AutoImageProcessor.from_pretrained(path)
        model = VideoMAEForVideoClassification.from_pretrained(path, dtype=dtype).to(device).eval()

        def run():
            labels = []
            for i in range(0, len(inputs), batch):
                clips = inputs[i:i + batch]
                px = proc(clips, return_tensors="pt")["pixel_values"].to(device=device, dtype=dtype)
                with torch.no_grad():
                    logits = model(pixel_values=px).logits
                labels += [model.config.id2label[int(j)] for j in logits.argmax(-1).tolist()]
            return labels
    else:
        task = MODELS[name][2]
        pipe = pipeline(task, model=str(path), device=device, dtype=dtype)
        kw = {"candidate_labels": LABELS} if name == "clip" else {"top_k": 1}

        def run():
            return [top1(a) for a in pipe(inputs, batch_size=batch, **kw)]

    run()
    times, labels = [], []
    for _ in range(reps):
        sync()
        t = time.perf_counter()
        labels = run()
        sync()
        times.append(time.perf_counter() - t)
    return len(inputs) / statistics.median(times), labels


def bench_ours(host: str, name: str, path: Path, requests: list[dict], batch: int, reps: int, device: str,
               precision: str, work: Path):
    inputs = work / f"{name}_requests.jsonl"
    inputs.write_text("".join(json.dumps(r) + "\n" for r in requests))
    out = work / f"{name}_out_{batch}.jsonl"
    cmd = [host, "bench", MODELS[name][1], "--model", str(path), "--inputs", str(inputs), "--batch-size",
           str(batch), "--warmup", "1", "--reps", str(reps), "--output", str(out), "--device", device,
           "--precision", precision]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"host failed: {' '.join(cmd)}\n{proc.stderr[-3000:]}")
    stats = json.loads(proc.stdout.strip().splitlines()[-1])["bench"]
    labels = [top1(json.loads(line)) for line in out.read_text().splitlines()]
    return stats["median_per_second"], labels


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host-bin", default=str(ROOT / "target/release/host"))
    ap.add_argument("--work", default="/tmp/host-bench-vision")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="f32")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--images", type=int, default=32, help="images per pass (clips: a quarter of it)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--models", default="vit,clip,videomae")
    ap.add_argument("--out-prefix", default="results/bench_vision_cpu")
    ap.add_argument("--note", default="", help="a line about the run's conditions for the report")
    args = ap.parse_args()
    device = "cuda" if args.device.startswith("cuda") else "cpu"
    dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[args.precision]
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    photos = [photo(i) for i in range(args.images)]
    rows = []
    for name in args.models.split(","):
        path = model_dir(work, name)
        if MODELS[name][3] == "clip":
            n = max(1, args.images // 4)
            frames = [[photo(1000 + 16 * c + f) for f in range(16)] for c in range(n)]
            peer_inputs = frames
            requests = [{"frames": [encoded(f, "PNG") for f in clip]} for clip in frames]
        else:
            peer_inputs = [p.copy() for p in photos]
            requests = [{"image": encoded(p, "JPEG")} for p in photos]
            # The pipeline gets the same pixels ours decodes.
            peer_inputs = [Image.open(io.BytesIO(base64.b64decode(r["image"]))).convert("RGB") for r in requests]
            if name == "clip":
                requests = [dict(r, candidate_labels=LABELS) for r in requests]
        for batch in [int(b) for b in args.batches.split(",")]:
            peer_rate, peer_labels = bench_peer(name, path, peer_inputs, batch, args.reps, device, dtype)
            our_rate, our_labels = bench_ours(args.host_bin, name, path, requests, batch, args.reps,
                                              args.device, args.precision, work)
            agree = sum(a == b for a, b in zip(peer_labels, our_labels))
            row = {"model": name, "batch": batch, "inputs": len(requests), "transformers_per_s": peer_rate,
                   "ours_per_s": our_rate, "ratio": our_rate / peer_rate, "top1_agree": agree}
            print(row, file=sys.stderr)
            rows.append(row)
    report = {
        "machine": machine(), "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "ours": f"--device {args.device} --precision {args.precision}", "transformers_dtype": str(dtype),
        "versions": {"torch": torch.__version__}, "note": args.note, "rows": rows,
    }
    Path(args.out_prefix + ".json").write_text(json.dumps(report, indent=2))
    unit = {"vit": "images", "clip": "images", "videomae": "clips of 16 frames"}
    lines = [
        "# Images and video: host vs the transformers pipeline, end to end",
        "",
        f"- machine: {report['machine']}",
        "- models: ViT-base/16 (1000 labels), CLIP ViT-B/32 (5 candidate labels), VideoMAE-base (16 frames, "
        "400 labels); real architectures, random weights",
        f"- inputs: synthetic 640x480 photos (JPEG to ours, the same decoded pixels to the pipeline); "
        f"VideoMAE: 16 PNG frames a clip (peer: its image processor + model)",
        f"- ours: `host bench <skill> {report['ours']}` (decoding and preprocessing in the sandbox included); "
        f"transformers: `pipeline(...)` on {device} {dtype}",
        f"- date: {report['date']}; median of {args.reps} passes after a warm-up; scripts/bench_vision.py"
        + (f"; {args.note}" if args.note else ""),
        "",
        "| model | batch | unit | transformers /s | ours /s | ours/transformers | top-1 agree |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {unit[r['model']]} | {r['transformers_per_s']:.1f} | "
                     f"{r['ours_per_s']:.1f} | {r['ratio']:.2f}x | {r['top1_agree']}/{r['inputs']} |")
    Path(args.out_prefix + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
