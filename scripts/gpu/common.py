"""Shared helpers of the GPU test suite and benchmark (scripts/gpu/*.py).

Not a script: imported by its siblings (a script's own folder is on
``sys.path`` when it runs). Everything here is plain standard library plus
numpy; torch is imported lazily, only where a function needs it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# The caller's setting, restored for the host processes we start (the Rust
# tokenizers crate reads it too; ours must run as it would on its own).
_ORIG_TOKENIZERS_PARALLELISM = os.environ.get("TOKENIZERS_PARALLELISM")

# Never touch the network: the GPU machine has none, and neither do the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
_T0 = time.monotonic()


def log(msg: str) -> None:
    """Progress line on stderr: wall clock and seconds since start."""
    now = _dt.datetime.now().strftime("%H:%M:%S")
    print(f"[{now} +{time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def quiet_hf() -> None:
    """Silence transformers' info logs and progress bars."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass
    try:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
    except ImportError:
        pass


def versions() -> dict:
    out = {"python": platform.python_version()}
    for mod in ("torch", "transformers", "sentence_transformers", "tokenizers",
                "safetensors", "numpy"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - missing optional package
            out[mod] = None
    try:
        import torch

        out["torch_cuda"] = torch.version.cuda
    except Exception:  # noqa: BLE001
        pass
    return out


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def nvidia_smi() -> dict | None:
    """Name, driver and memory of GPU 0 from nvidia-smi, or None."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,pci.bus_id",
             "--format=csv,noheader"],
            capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    first = [x.strip() for x in out.stdout.strip().splitlines()[0].split(",")]
    keys = ["name", "driver_version", "memory_total", "pci_bus_id"]
    return dict(zip(keys, first))


def machine(device: str) -> dict:
    """What ran the measurement: the GPU (torch, else nvidia-smi) or the CPU."""
    info: dict = {"cpu": cpu_name(), "cpu_cores": os.cpu_count(),
                  "os": platform.platform(), "host_device_arg": device}
    smi = nvidia_smi()
    if smi:
        info["nvidia_smi"] = smi
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
            props = torch.cuda.get_device_properties(0)
            info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
            info["gpu_compute_capability"] = f"{props.major}.{props.minor}"
    except Exception:  # noqa: BLE001
        pass
    if gpu is None and smi:
        gpu = smi.get("name")
    info["gpu"] = gpu
    info["driver"] = smi.get("driver_version") if smi else None
    # The card the numbers belong to; "cpu" when the host ran on the CPU.
    info["label"] = gpu if (gpu and not device.startswith("cpu")) else f"cpu ({info['cpu']})"
    return info


def host_devices(host: Path) -> object:
    """`host devices --json`: what the host itself sees (CUDA driver, GPUs)."""
    try:
        out = subprocess.run([str(host), "devices", "--json"], capture_output=True,
                             text=True, timeout=120)
        return json.loads(out.stdout) if out.returncode == 0 else {
            "error": out.stderr.strip()[-2000:]}
    except Exception as exc:  # noqa: BLE001
        return {"error": f"{type(exc).__name__}: {exc}"}


def resolve_host(path: str | Path) -> Path:
    p = Path(path)
    p = p if p.is_absolute() else Path.cwd() / p
    if not p.is_file():
        raise SystemExit(f"error: host binary not found at {p}")
    return p


def host_error_text(stderr: str, rc: int | None) -> str:
    """The informative part of a failed host run: its `error:` lines, else the tail."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith("error")]
    text = " | ".join(errs[-3:]) if errs else " | ".join(lines[-3:])
    return (f"exit {rc}: " if rc is not None else "") + (text[-600:] or "(no stderr)")


def host_env() -> dict:
    """This process's environment minus what this module changed for Python."""
    env = dict(os.environ)
    env.pop("TOKENIZERS_PARALLELISM", None)
    if _ORIG_TOKENIZERS_PARALLELISM is not None:
        env["TOKENIZERS_PARALLELISM"] = _ORIG_TOKENIZERS_PARALLELISM
    return env


def run_cmd(cmd: list[str], timeout: float, env: dict | None = None) -> dict:
    """Runs a command (environment: ``host_env()`` unless given); returns rc,
    stdout, stderr, wall_s and timed_out (never raises)."""
    env = host_env() if env is None else env
    t = time.perf_counter()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
        return {"rc": p.returncode, "stdout": p.stdout, "stderr": p.stderr,
                "wall_s": time.perf_counter() - t, "timed_out": False}
    except subprocess.TimeoutExpired as exc:
        def text(b):
            return b.decode("utf-8", "replace") if isinstance(b, bytes) else (b or "")
        return {"rc": None, "stdout": text(exc.stdout), "stderr": text(exc.stderr)
                + f"\nerror: timed out after {timeout:.0f}s", "wall_s": time.perf_counter() - t,
                "timed_out": True}
    except OSError as exc:
        return {"rc": None, "stdout": "", "stderr": f"error: cannot run {cmd[0]}: {exc}",
                "wall_s": time.perf_counter() - t, "timed_out": False}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_outputs(prefix: str | Path, report: dict, markdown: str) -> tuple[Path, Path]:
    """Writes PREFIX.json and PREFIX.md; returns their paths."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    jp = prefix.with_name(prefix.name + ".json")
    mp = prefix.with_name(prefix.name + ".md")
    jp.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    mp.write_text(markdown, encoding="utf-8")
    return jp, mp


def fmt(x, spec: str = ".1f", none: str = "-") -> str:
    if x is None:
        return none
    try:
        return format(x, spec)
    except (TypeError, ValueError):
        return str(x)


def md_escape(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")
