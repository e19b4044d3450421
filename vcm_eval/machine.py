"""The CPU kind a result was computed on: float convolutions differ in their last bits between CPU instruction
sets (AVX2, AVX-512) and vendors, which can move a quantised sample and so a few bits and detections. Recorded
beside quoted figures and recorded tables, so a comparison knows whether it may ask for the last digit."""

from __future__ import annotations

import platform


def cpu_fingerprint() -> dict[str, str]:
    """Machine architecture, CPU model name, the SIMD level torch dispatches to, and torch's version."""
    import torch

    model = ""
    try:
        with open("/proc/cpuinfo") as info:
            model = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        pass
    return {"machine": platform.machine(), "cpu": model or platform.processor(),
            "torch_cpu_capability": str(torch.backends.cpu.get_cpu_capability()), "torch": torch.__version__}
