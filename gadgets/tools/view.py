"""``cardiomm-view``: look at reconstructed images without writing code.

Reads any images file in the layout ``gadgetron_ismrmrd_client`` writes (this project's replay
and Gadgetron's own client alike) and writes, per series:

- a labelled PNG montage (a row per slice, a column per frame: cine phases or mapping weightings),
  windowed over the series; the title says which method made the images (CardioMM or the
  conventional fallback, from the images' meta);
- with ``--gif``, an animated GIF per slice that cycles through the frames (a cine loop).

Example::

    cardiomm-view out/cine_images.h5 -o out/view      # out/view/<stem>_series_001.png ...
    cardiomm-view OUT.h5 --group "2026-11-30 10:00:00" --gif -o view

Exit codes: 0 written; 1 the file holds no images; 2 usage error (missing or unreadable file,
ambiguous group).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..io.export import WINDOW_PERCENTILES, group_series, magnitude, write_png
from ..io.image_io import list_image_groups, read_images

logger = logging.getLogger(__name__)

GIF_FRAME_MS = 60


def write_gifs(slices_by_series: dict[int, dict[int, list]], folder: Path, name: str) -> list[Path]:
    """One looping GIF per (series, slice) cycling the frames; return the paths."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for series, slices in slices_by_series.items():
        values = np.concatenate([magnitude(im).ravel() for m in slices.values() for im in m])
        top = float(np.percentile(values, WINDOW_PERCENTILES[1])) or 1.0
        for slice_index, members in slices.items():
            frames = [Image.fromarray((np.clip(magnitude(im) / top, 0, 1) * 255).astype(np.uint8)) for im in members]
            path = folder / f"{name}_series_{series:03d}_slice_{slice_index:03d}.gif"
            frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=GIF_FRAME_MS, loop=0)
            written.append(path)
    return written


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cardiomm-view",
        description="Write labelled PNG montages (and optionally cine GIFs) of the images in an ISMRMRD images file.",
        epilog="example: cardiomm-view out/cine_images.h5 -o out/view --gif",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path, metavar="IMAGES.h5", help="images file (as gadgetron_ismrmrd_client writes)")
    parser.add_argument("-o", "--out", type=Path, default=Path("."), metavar="DIR", help="output folder (default .)")
    parser.add_argument("--group", help="image group in the file (default: the newest)")
    parser.add_argument("--gif", action="store_true", help="also write a cine GIF per slice")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if not args.images.is_file():
        parser.error(f"{str(args.images)!r} is not a file")
    if args.out.exists() and not args.out.is_dir():
        parser.error(f"-o {str(args.out)!r} is an existing file, not a folder")
    try:
        groups = list_image_groups(args.images)
        group = args.group or (groups[-1] if groups else None)
        if group is None:
            print(f"cardiomm-view: {args.images} holds no images", file=sys.stderr)
            return 1
        by_series = read_images(args.images, group)
    except (OSError, ValueError) as exc:
        parser.error(f"cannot read images from {args.images}: {exc}")
    images = [im for members in by_series.values() for im in members]
    if not images:
        print(f"cardiomm-view: {args.images}:/{group} holds no images", file=sys.stderr)
        return 1
    name = args.images.stem
    written = write_png(images, args.out, name=name)
    if args.gif:
        written += write_gifs(group_series(images), args.out, name)
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
