#!/usr/bin/env python3
"""Validate ``mapped_models.json`` at the repository root.

Checks that the file

* is a JSON object whose keys are exactly the 47 seed skill keys (plus the
  optional top-level ``"$comment"`` string);
* gives every key an object with the fields ``model``, ``task``,
  ``architecture`` (non-empty strings; ``model`` looks like ``owner/name``),
  ``skill`` and ``fixture`` (each null or a non-empty string), and no others;
* uses as ``skill`` only names of directories under ``guest-skills/``;
* points ``fixture`` at a repo-relative path that exists.

Prints every problem found and exits 1 if there is any, 0 otherwise.  Uses
only the standard library::

    python3 scripts/check_mapped_models.py [--file mapped_models.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

SEED_KEYS = [
    "bert", "distilbert", "roberta", "gpt_neo", "gptj", "bart", "mt5", "mbart",
    "electra", "longformer", "deberta-v2", "gpt2", "dpr", "mobilebert", "mpnet",
    "camembert", "flaubert", "codegen", "xlm-roberta", "albert", "opt",
    "wav2vec2", "clip", "t5", "blenderbot", "blenderbot-small", "pegasus", "led",
    "bloom", "vit", "deit", "detr", "swin", "convnext", "hubert", "squeezebert",
    "layoutlm", "deberta", "whisper", "clap", "qwen2", "llava", "llava_next",
    "llama", "xclip", "videomae", "qwen2_vl",
]
FIELDS = ("model", "task", "architecture", "skill", "fixture")
REQUIRED_STRINGS = ("model", "task", "architecture")
NULLABLE_STRINGS = ("skill", "fixture")


def check(data, repo: Path) -> list[str]:
    problems: list[str] = []
    if not isinstance(data, dict):
        return ["top level is not a JSON object"]

    comment = data.get("$comment")
    if comment is not None and not isinstance(comment, str):
        problems.append("$comment must be a string")
    entries = {k: v for k, v in data.items() if k != "$comment"}

    missing = [k for k in SEED_KEYS if k not in entries]
    extra = sorted(k for k in entries if k not in SEED_KEYS)
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected keys: {', '.join(extra)}")
    if len(entries) != len(SEED_KEYS):
        problems.append(f"expected {len(SEED_KEYS)} keys, found {len(entries)}")

    skills_dir = repo / "guest-skills"
    skills = {p.name for p in skills_dir.iterdir() if p.is_dir()} if skills_dir.is_dir() else set()

    for key, entry in entries.items():
        where = f"{key}:"
        if not isinstance(entry, dict):
            problems.append(f"{where} value is not an object")
            continue
        for field in FIELDS:
            if field not in entry:
                problems.append(f"{where} missing field '{field}'")
        for field in sorted(set(entry) - set(FIELDS)):
            problems.append(f"{where} unknown field '{field}'")
        for field in REQUIRED_STRINGS:
            value = entry.get(field)
            if field in entry and (not isinstance(value, str) or not value.strip()):
                problems.append(f"{where} '{field}' must be a non-empty string")
        model = entry.get("model")
        if isinstance(model, str) and model.count("/") != 1:
            problems.append(f"{where} model '{model}' is not of the form owner/name")
        for field in NULLABLE_STRINGS:
            value = entry.get(field)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                problems.append(f"{where} '{field}' must be null or a non-empty string")

        skill = entry.get("skill")
        if isinstance(skill, str) and skill.strip() and skill not in skills:
            problems.append(f"{where} skill '{skill}' is not a directory under guest-skills/ "
                            f"(have: {', '.join(sorted(skills)) or 'none'})")
        fixture = entry.get("fixture")
        if isinstance(fixture, str) and fixture.strip():
            path = Path(fixture)
            if path.is_absolute() or ".." in path.parts:
                problems.append(f"{where} fixture '{fixture}' must be a repo-relative path")
            elif not (repo / path).exists():
                problems.append(f"{where} fixture '{fixture}' does not exist")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", type=Path, default=REPO / "mapped_models.json")
    args = parser.parse_args(argv)
    try:
        data = json.loads(args.file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        print(f"{args.file}: cannot read: {exc}", file=sys.stderr)
        return 1
    problems = check(data, REPO)
    for problem in problems:
        print(f"{args.file.name}: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} problem(s)", file=sys.stderr)
        return 1
    n = sum(1 for k in data if k != "$comment")
    print(f"{args.file.name}: OK ({n} keys)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
