"""Describe the GPU and the software stack for the capture manifest."""

from __future__ import annotations

import platform
import subprocess


def _nvidia_smi() -> dict:
    """Max clocks and driver from nvidia-smi (first GPU); empty where it is missing."""
    q = "name,driver_version,clocks.max.sm,clocks.max.mem,memory.total"
    try:
        p = subprocess.run(["nvidia-smi", f"--query-gpu={q}", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return {}
    line = (p.stdout.strip().splitlines() or [""])[0]
    vals = [v.strip() for v in line.split(",")]
    if p.returncode != 0 or len(vals) != 5:
        return {}

    def num(v: str) -> float | None:
        try:
            return float(v)
        except ValueError:
            return None

    return {"name": vals[0], "driver": vals[1], "sm_clock_max_mhz": num(vals[2]),
            "memory_clock_max_mhz": num(vals[3])}


def _spec_key(name: str) -> str | None:
    from moeprof.roofline.gpus import match_gpu

    g = match_gpu(name)
    return g.name if g else None


def describe(device: int = 0) -> dict:
    """{'gpu': {...}, 'software': {...}, 'cuda_available': bool}. Imports torch; run it in a child."""
    software: dict = {"python": platform.python_version()}
    gpu: dict = {}
    smi = _nvidia_smi()
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        software["torch"] = torch.__version__
        try:
            import triton

            software["triton"] = triton.__version__
        except ImportError:
            software["triton"] = None
    available = bool(torch is not None and torch.cuda.is_available())
    if available:
        p = torch.cuda.get_device_properties(device)
        gpu = {
            "name": p.name, "spec": _spec_key(p.name), "sm_count": p.multi_processor_count,
            "memory_bytes": p.total_memory, "l2_bytes": getattr(p, "L2_cache_size", None),
            "compute_capability": f"{p.major}.{p.minor}", "cuda": torch.version.cuda,
        }
    elif smi:
        gpu = {"name": smi["name"], "spec": _spec_key(smi["name"])}
    gpu.update({k: smi.get(k) for k in ("sm_clock_max_mhz", "memory_clock_max_mhz", "driver")})
    return {"gpu": gpu, "software": software, "cuda_available": available, "torch_installed": torch is not None}
