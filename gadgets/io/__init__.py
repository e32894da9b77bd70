"""File input and output: ISMRMRD raw files (:mod:`.ismrmrd_io`), ISMRMRD image files (:mod:`.image_io`),
DICOM / NIfTI / PNG export (:mod:`.export`), montages and comparison figures (:mod:`.preview`)."""

from __future__ import annotations

import os
from typing import Union

#: A file path as the functions of this package (and the chain format) accept it.
PathLike = Union[str, "os.PathLike[str]"]
