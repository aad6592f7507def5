"""Utilisation: CPU % and DRAM % from psutil, GPU % and VRAM % from NVML when a GPU is present.

Every value is a percentage in [0, 100] or `None` when it cannot be measured here (no GPU, no NVML):
never a made-up 0.0. `cpu_pct` is the machine's CPU use over all cores since the previous sample
(psutil's `cpu_percent(interval=None)`), so sampling once per epoch gives the epoch's average.
"""

from __future__ import annotations

from typing import Any

import psutil


class Utilisation:
    def __init__(self, device: str = "cpu"):
        psutil.cpu_percent(interval=None)  # prime: the first call has no interval to measure
        self._nvml: Any = None
        self._handle: Any = None
        if device.startswith("cuda"):
            self._init_nvml(device)

    def _init_nvml(self, device: str) -> None:
        try:
            import pynvml  # optional: `pip install nvidia-ml-py`

            pynvml.nvmlInit()
            index = int(device.split(":")[1]) if ":" in device else 0
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self._nvml = pynvml
        except Exception:  # noqa: BLE001 - no library, no driver, no device: not measurable
            self._nvml = self._handle = None

    def sample(self) -> dict[str, float | None]:
        out: dict[str, float | None] = {
            "cpu_pct": float(psutil.cpu_percent(interval=None)),
            "dram_pct": float(psutil.virtual_memory().percent),
            "gpu_pct": None,
            "vram_pct": None,
        }
        if self._nvml is not None:
            try:
                util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
                mem = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
                out["gpu_pct"] = float(util.gpu)
                out["vram_pct"] = 100.0 * float(mem.used) / float(mem.total) if mem.total else None
            except Exception:  # noqa: BLE001
                pass
        return out
