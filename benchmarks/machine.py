"""What machine a benchmark ran on: the CPU's model name, as the result tables record it."""

from __future__ import annotations

from pathlib import Path

__all__ = ["cpu_model_name"]


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
