"""What machine a benchmark ran on, as the result tables record it: the CPU's model name, the CPU count, the OS."""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["cpu_model_name", "machine_line"]


def cpu_model_name() -> str | None:
    """The first ``model name`` of ``/proc/cpuinfo`` (e.g. ``AMD EPYC 7763 64-Core Processor``);
    None where the file is missing or names no model (the caller picks its fallback)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def machine_line() -> str:
    """``<CPU model name>, <n> CPUs; <platform>`` (the machine architecture where no model name is known)."""
    cpu = cpu_model_name() or platform.machine()
    return f"{cpu}, {os.cpu_count()} CPUs; {platform.platform()}"
