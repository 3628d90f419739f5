"""The machine a run ran on, for its run_spec: device, platform, Python, CPUs, torch's threads and the
GPU. Apart from `harness.runs` because it asks torch, and reports, which read `runs`, never import torch."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path


def device_info(device: str) -> dict:
    import torch

    info = {"device": device, "platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "cpu": cpu_model()}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def cpu_model() -> str:
    """The processor's model name (/proc/cpuinfo on Linux; platform's guess elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def name(info: dict) -> str:
    """A file name for the machine of `device_info`: its GPU's name, else its CPU model and cores
    (`nvidia-h100-80gb-hbm3`, `intel-r-xeon-r-processor-2c`), so figures of one machine land in one file."""
    label = info["gpu"] if info.get("gpu") else f"{info['cpu']} {info['cpu_count']}c"
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
