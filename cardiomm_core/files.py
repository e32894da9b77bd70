"""File-permission helpers: files written through temporary names get the modes the umask allows.

``tempfile.mkstemp`` creates files 0600 and ``tempfile.mkdtemp`` folders 0700 whatever the umask;
renamed into place they would keep those modes, so a checkpoint written by one user could not be
read by another (e.g. the docker image's UID 1000 reading a mounted folder). Writers chmod their
temporary files to ``0o666 & ~umask`` (folders ``0o777 & ~umask``), as ``open()``/``mkdir`` would.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

__all__ = ["current_umask", "default_dir_mode", "default_file_mode", "write_atomically"]

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


def write_atomically(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write ``path`` whole or not at all: ``write(handle)`` fills a temporary file in the same
    folder (mode ``default_file_mode()``), which then replaces ``path``. The folder must exist.
    Raises what ``write`` or the file system raises (``OSError``); no temporary file stays behind."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem[:16]}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, default_file_mode())  # mkstemp's 0600 would keep other users out of a shared folder
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except OSError:
            pass
        raise
