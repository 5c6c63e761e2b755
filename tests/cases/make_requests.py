#!/usr/bin/env python3
"""Writes the requests of tests/cases/<skill>.jsonl (no expectations).

The expectations are then recorded from a trusted run, the cpu device in
f32 (see tests/authoring.rs for each skill's fixture):

    host test SKILL --model tests/fixtures/FIXTURE --cases tests/cases/SKILL.jsonl --record

Run it only to change the requests: it drops the recorded expectations.
"""
import base64
import json
import math
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "tests", "cases")


def b64(rel):
    with open(os.path.join(ROOT, "tests", "fixtures", rel), "rb") as f:
        return base64.b64encode(f.read()).decode()


def tone(hz, n=3200, rate=16000):
    return [round(0.2 * math.sin(2 * math.pi * hz * i / rate), 4) for i in range(n)]


PNG = b64("images/gradient_64x48.png")
PALETTE = b64("images/palette_40x40.png")
FRAMES = [b64(f"video/frame_{i}.png") for i in range(4)]

CASES = {
    "text-embedding": [
        ("sentence", {"text": "The quick brown fox jumps over the lazy dog."}),
        ("short", {"text": "hello"}),
        ("empty text", {"text": ""}),
    ],
    "fill-mask": [
        ("one mask", {"text": "Paris is the [MASK] of France.", "top_k": 3}),
        ("two masks", {"text": "The [MASK] sat on the [MASK].", "top_k": 2}),
        ("targets", {"text": "I like [MASK].", "targets": ["cats", "dogs"]}),
        ("no mask", {"text": "There is no mask here."}),
    ],
    "text-classification": [
        ("all labels", {"text": "I love this movie."}),
        ("top 1", {"text": "Terrible, just terrible.", "top_k": 1}),
        ("pair", {"text": "Is it raining?", "text_pair": "The streets are wet."}),
        ("sigmoid", {"text": "Fine.", "function_to_apply": "sigmoid"}),
    ],
    "token-classification": [
        ("none", {"text": "Ada Lovelace lived in London."}),
        ("simple", {"text": "Ada Lovelace lived in London.", "aggregation_strategy": "simple"}),
    ],
    "image-classification": [
        ("png", {"image": PNG, "top_k": 3}),
        ("palette png", {"image": PALETTE}),
        ("not an image", {"image": base64.b64encode(b"not an image").decode()}),
    ],
    "zero-shot-image-classification": [
        ("two labels", {"image": PNG, "candidate_labels": ["a cat", "a dog"]}),
        ("template", {"image": PALETTE, "candidate_labels": ["red", "green", "blue"],
                      "hypothesis_template": "a {} picture"}),
    ],
    "object-detection": [
        ("png", {"image": PNG, "threshold": 0.0}),
        ("palette png", {"image": PALETTE}),
    ],
    "multimodal-embedding": [
        ("text", {"text": "a photo of a cat"}),
        ("image", {"image": PNG}),
    ],
    "text-generation": [
        ("greedy", {"prompt": "Hello, my name is", "max_new_tokens": 8, "do_sample": False}),
        ("sampled", {"prompt": "Once upon a time", "max_new_tokens": 6, "do_sample": True,
                     "seed": 7, "top_k": 20, "temperature": 0.8}),
    ],
    "text2text-generation": [
        ("greedy", {"text": "translate English to German: The house is wonderful.", "max_new_tokens": 8}),
        ("beams", {"text": "summarize: a short text", "max_new_tokens": 6, "num_beams": 2}),
    ],
    "video-classification": [
        ("frames", {"frames": FRAMES, "top_k": 3}),
        ("gif", {"video": b64("video/moving.gif")}),
    ],
    "audio-embedding": [
        ("tone", {"array": tone(440), "sampling_rate": 16000}),
        ("8 kHz", {"array": tone(220, 1600, 8000), "sampling_rate": 8000}),
    ],
    "automatic-speech-recognition": [
        ("tone", {"array": tone(440), "sampling_rate": 16000}),
    ],
    "zero-shot-audio-classification": [
        ("tone", {"array": tone(440), "sampling_rate": 16000,
                  "candidate_labels": ["a beep", "a dog barking"]}),
    ],
    "hostile": [
        ("ok", {"do": "ok", "id": 1}),
        ("endless loop", {"do": "loop"}),
        ("unbounded memory", {"do": "memory"}),
        ("panic", {"do": "trap"}),
        ("huge graph", {"do": "huge-graph"}),
        ("unknown weight", {"do": "unknown-weight"}),
        ("no files", {"do": "files"}),
        ("no network", {"do": "network"}),
        ("no environment", {"do": "env"}),
    ],
}

for skill, cases in CASES.items():
    with open(os.path.join(OUT, f"{skill}.jsonl"), "w") as f:
        for name, request in cases:
            f.write(json.dumps({"name": name, "request": request}, separators=(",", ":")) + "\n")
