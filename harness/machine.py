"""The machine a run ran on, for its run_spec: device, platform, Python, CPUs, torch's threads and the
GPU. Apart from `harness.runs` because it asks torch, and reports, which read `runs`, never import torch."""

from __future__ import annotations

import os
import platform


def device_info(device: str) -> dict:
    import torch

    info = {"device": device, "platform": platform.platform(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
