"""Skip unreadable files and take the next readable item: shared by the file-backed data sets.

:class:`SkipUnreadable` is a mixin for a map-style data set whose items are ``(file_index,
slice_index)`` pairs into a list of file entries (each with a ``path``). It supplies
``__getitem__`` (skip files marked bad, read the item with the data set's ``_load``, and on a
read error either raise or mark the file bad and try the next index, wrapping) and ``_skip``
(log a warning and record ``(path, reason)`` in ``skipped``). Messages start with the data set's
class name.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .sample import KspaceSample

#: Errors that mean "this file cannot be read" (anything else is a bug and propagates).
READ_ERRORS = (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError)
#: Accepted values of ``on_read_error``.
ON_READ_ERROR = ("next", "raise")


def check_on_read_error(value: object) -> str:
    """Return ``value`` if it is "next" or "raise", else raise ValueError naming ``on_read_error``."""
    if value not in ON_READ_ERROR:
        raise ValueError(f"on_read_error must be 'next' or 'raise', got {value!r}")
    return str(value)


class SkipUnreadable:
    """Mixin: ``__getitem__`` that skips unreadable files, and ``_skip`` that records them.

    The data set sets ``items`` (``(file_index, slice_index)`` pairs), ``files`` (entries with a
    ``path``), ``on_read_error`` ("next" or "raise"), ``skipped`` (list of ``(path, reason)``) and
    ``_bad`` (set of file indices), and implements ``_load(index) -> KspaceSample``. Override
    ``_location()`` to name where the data set looks in the "no readable item left" message.
    """

    items: list[tuple[int, int]]
    files: Sequence[Any]
    on_read_error: str
    skipped: list[tuple[str, str]]
    _bad: set[int]

    def _load(self, index: int) -> KspaceSample:
        raise NotImplementedError

    def _location(self) -> str:
        """Text placed after "no readable item left" (e.g. " under /data"); empty by default."""
        return ""

    def _skip(self, path: Path, reason: str) -> None:
        # logged under the data set's own module, as before the mixin existed
        logging.getLogger(type(self).__module__).warning("%s: skipping %s: %s", type(self).__name__, path, reason)
        self.skipped.append((str(path), reason))

    def __getitem__(self, index: int) -> KspaceSample:
        name = type(self).__name__
        n_items = len(self.items)
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n_items <= index < n_items:
            raise IndexError(f"index {index!r} out of range for {n_items} items")
        index = int(index) % n_items
        for attempt in range(n_items):
            current = (index + attempt) % n_items
            file_index = self.items[current][0]
            if file_index in self._bad:
                continue
            try:
                return self._load(current)
            except READ_ERRORS as error:
                path = self.files[file_index].path
                reason = f"slice {self.items[current][1]}: {type(error).__name__}: {error}"
                if self.on_read_error == "raise":
                    raise RuntimeError(f"{name}: cannot read {path} {reason}") from error
                self._bad.add(file_index)
                self._skip(path, reason)
        raise RuntimeError(f"{name}: no readable item left{self._location()} ({len(self.skipped)} files skipped)")
