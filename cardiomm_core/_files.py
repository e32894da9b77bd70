"""File-permission helpers: files written through temporary names get the modes the umask allows.

``tempfile.mkstemp`` creates files 0600 and ``tempfile.mkdtemp`` folders 0700 whatever the umask;
renamed into place they would keep those modes, so a checkpoint written by one user could not be
read by another (e.g. the docker image's UID 1000 reading a mounted folder). Writers chmod their
temporary files to ``0o666 & ~umask`` (folders ``0o777 & ~umask``), as ``open()``/``mkdir`` would.
"""

from __future__ import annotations

import os
import threading

__all__ = ["current_umask", "default_dir_mode", "default_file_mode"]

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # the portable way sets and restores it; keep that window to one thread
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def default_file_mode() -> int:
    """The mode ``open(path, 'w')`` would give a new file: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def default_dir_mode() -> int:
    """The mode ``mkdir`` would give a new folder: ``0o777 & ~umask``."""
    return 0o777 & ~current_umask()
