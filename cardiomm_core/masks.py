"""Sampling masks of the CMRxRecon families, deterministic for a seed.

The families follow the official CMRxRecon mask generators (CmrxRecon/CMRxRecon2024,
``CMRxReconMaskGeneration/Task1/.../UniformSampling.m`` and
``Task2/.../{ktUniform,ktGaussian,ktRadial}Sampling.m``, ``ktMaskGenerator_Task2.m``):

- ``Uniform`` (2023, 2024 task 1): ky lines ``0, R, 2R, ...`` (MATLAB ``1:R:end``), the same in
  every frame, plus 24 central auto-calibration (ACS) lines. R = 4, 8, 10 in the challenge.
- ``ktUniform``: an equispaced lattice sheared by one ky line per frame (the Toeplitz pattern of
  ``ktUniformSampling.m``: frame t samples ky = t mod R), so a cycle of R frames covers every ky.
- ``ktGaussian``: per frame, ky lines drawn without replacement from the variable-density
  profile of ``ktGaussianSampling.m`` (``0.1 + alpha / (1 - alpha) * exp(-ky^2 / sigma^2)``,
  alpha 0.2, sigma = n_ky / 5), a different draw in every frame.
- ``ktRadial``: a pseudo-radial pattern on the Cartesian (ky, kx) grid: equispaced spokes over
  180 degrees through the k-space centre, of length max(n_ky, n_kx) ("cropcorner"), rotated by
  137.5 degrees from one frame to the next (``angle4next`` of ``ktMaskGenerator_Task2.m``), plus a
  fully sampled n_acs x n_acs centre.

The kt families use 16 ACS lines (radial: a 16 x 16 centre); accelerations 4 to 24.

Acceleration bookkeeping. CMRxRecon's nominal acceleration does not count the calibration region
(at R = 24 with 16 ACS lines on 246 ky lines, counting the ACS would be impossible). Here
``realised_acceleration`` is (grid locations outside the ACS) / (sampled locations outside the ACS)
over all frames, and the generators aim it at the nominal value: exactly the challenge pattern
for Uniform and ktUniform, and, for ktGaussian and ktRadial, the number of lines / spokes per frame
is chosen by error diffusion over the frames so that the total lands on the nominal value
(CMRxRecon's own ktGaussian draws round(n_ky / R) lines that may fall into the ACS, and its
ktRadial uses floor(180 / (0.6 R)) spokes; both realise a rate that drifts from the nominal).
``effective_acceleration`` counts everything: all grid locations / all sampled locations.

K-space is centred (DC at index n // 2, as ``cardiomm_core.fft.fft2c`` puts it); the ACS block
starts at ``n // 2 - n_acs // 2`` (the centring of the ESPIRiT ``zpad`` that CMRxRecon uses).

Two conventions (``convention=``):

- ``"project"`` (default): the generators above, acceleration steered to the nominal R.
- ``"official"``: the recipes of the authors' CardioMM mask generator (a Python translation of
  their MATLAB code, ``CardioMM_dataundersampling``), with fixed counts and 20 calibration lines
  for every family (the paper's test protocol is Uniform / ktGaussian / ktRadial at R 8, 16, 24):

  * ``Uniform``: lines ``0, R, 2R, ...`` plus the ACS, the same in every frame: bit-identical to
    the project's Uniform with the same ``n_acs``.
  * ``ktUniform``: frame t samples ky = t mod R (plus the ACS), starting at 0 in every cycle
    (the official code's odd-frame-count quirk is not reproduced).
  * ``ktGaussian``: per frame, round(n_ky / R) lines drawn *with replacement* over all ky (ACS
    included) from ``0.1 + alpha / (1 - alpha) * exp(-ky^2 / sigma^2)`` with numpy's legacy
    ``RandomState`` seeded as the official code seeds it (``seed`` -> one seed per frame); a
    line drawn twice moves to the nearest free line of its frame (the lower one on a tie); then
    the ACS is added. The non-ACS acceleration drifts from R (e.g. 18.45 for R = 16 at
    246 ky x 12 frames, seed 1: see the tests).
  * ``ktRadial``: floor(180 / (0.6 R)) spokes (about 300 / R), each a line through the centre of
    a max(n_ky, n_kx) square along ky (phase encoding) at angle 0, rotated with
    nearest-neighbour interpolation as ``skimage.transform.rotate(order=0)`` does, the first and
    the last (180 degrees) spoke both drawn, frame t starting at 137.5 t degrees; plus a
    20 x 20 ACS square.

Shapes: ``SamplingMask.mask`` is float32 ``(frames, ky, 1)`` for line patterns and ``"full"``,
``(frames, ky, kx)`` for ktRadial; ``SamplingMask.as_tensor()`` adds the core ``(batch, 1)`` axes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from .checks import check_int

logger = logging.getLogger(__name__)

#: The CMRxRecon sampling families.
MASK_PATTERNS: tuple[str, ...] = ("Uniform", "ktUniform", "ktGaussian", "ktRadial")
#: Families that sample whole ky lines (readout kx always fully sampled).
LINE_PATTERNS: tuple[str, ...] = MASK_PATTERNS[:3]
#: The fully sampled "pattern" (acceleration 1).
FULL_PATTERN = "full"

#: Default number of ACS lines (radial: side of the ACS square) per family.
DEFAULT_N_ACS: dict[str, int] = {"Uniform": 24, "ktUniform": 16, "ktGaussian": 16, "ktRadial": 16}
#: Mask conventions: the project's generators, or the official CardioMM recipes.
MASK_CONVENTIONS: tuple[str, ...] = ("project", "official")
#: ACS lines (radial: ACS square side) of the official convention, every family.
OFFICIAL_N_ACS = 20
#: The official ktRadial uses floor(180 / (OFFICIAL_RADIAL_FACTOR * R)) spokes.
OFFICIAL_RADIAL_FACTOR = 0.6


def default_n_acs(pattern: str, convention: str = "project") -> int:
    """ACS lines (ktRadial: side of the ACS square) ``make_mask`` uses when ``n_acs`` is None."""
    if convention not in MASK_CONVENTIONS:
        raise ValueError(f"convention must be one of {MASK_CONVENTIONS}, got {convention!r}")
    if pattern not in MASK_PATTERNS:
        raise ValueError(f"pattern must be one of {MASK_PATTERNS}, got {pattern!r}")
    return OFFICIAL_N_ACS if convention == "official" else DEFAULT_N_ACS[pattern]

#: ktGaussian density parameters of CMRxRecon's ktMaskGenerator_Task2.m / ktGaussianSampling.m.
GAUSSIAN_ALPHA = 0.2
GAUSSIAN_SIGMA_FRACTION = 0.2  # sigma = n_ky / 5
#: ktRadial rotation between consecutive frames, degrees (CMRxRecon's angle4next).
RADIAL_FRAME_ROTATION_DEG = 137.5
#: Below this nominal acceleration a cropped-corner radial pattern cannot reach the target.
RADIAL_MIN_ACCELERATION = 2.0


def round_half_up(x: np.ndarray | float) -> np.ndarray:
    """MATLAB-style rounding for non-negative values (numpy's rint rounds half to even)."""
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5).astype(np.int64)


def acs_start(n: int, n_acs: int) -> int:
    """First index of an ``n_acs``-wide block centred on the k-space centre ``n // 2``."""
    return n // 2 - n_acs // 2


@dataclass(frozen=True, eq=False)
class SamplingMask:
    """A sampling mask with its bookkeeping.

    ``mask``: float32, 0/1, ``(frames, ky, 1)`` for line patterns and "full", ``(frames, ky, kx)``
    for ktRadial (read-only). ``pattern``: a member of MASK_PATTERNS or "full".
    ``acceleration``: the nominal value asked for. ``realised_acceleration``: outside the
    calibration region (non-ACS locations / sampled non-ACS locations, over all frames; 1 when
    there is no such region). ``effective_acceleration``: all locations / sampled locations.
    ``n_acs``: ACS lines (radial: side of the ACS square; "full": n_ky).
    Equality is identity (``eq=False``): compare ``mask`` arrays explicitly.
    """

    mask: np.ndarray
    pattern: str
    acceleration: float
    realised_acceleration: float
    effective_acceleration: float
    n_acs: int

    def __post_init__(self) -> None:
        if not isinstance(self.mask, np.ndarray) or self.mask.ndim != 3 or self.mask.dtype != np.float32:
            raise ValueError(
                "mask must be a float32 numpy array of shape (frames, ky, kx|1), got "
                f"{type(self.mask).__name__} {getattr(self.mask, 'dtype', '')} {getattr(self.mask, 'shape', '')}"
            )
        if self.pattern not in MASK_PATTERNS + (FULL_PATTERN,):
            raise ValueError(f"pattern must be one of {MASK_PATTERNS + (FULL_PATTERN,)}, got {self.pattern!r}")
        if self.pattern != "ktRadial" and self.mask.shape[2] != 1:
            raise ValueError(f"a {self.pattern} mask must have kx = 1, got shape {self.mask.shape}")
        if not 0 <= self.n_acs <= self.mask.shape[1]:
            raise ValueError(f"n_acs must lie in [0, {self.mask.shape[1]}], got {self.n_acs}")
        self.mask.setflags(write=False)

    @property
    def n_frames(self) -> int:
        return int(self.mask.shape[0])

    @property
    def n_ky(self) -> int:
        return int(self.mask.shape[1])

    @property
    def is_line_mask(self) -> bool:
        return self.pattern != "ktRadial"

    def as_tensor(self) -> torch.Tensor:
        """The mask in the core layout: float32 ``(1, 1, frames, ky, kx|1)``."""
        return torch.from_numpy(np.array(self.mask, dtype=np.float32, copy=True))[None, None]

    def sampled_lines(self, frame: int) -> np.ndarray:
        """Sorted ky indices (int64) sampled in ``frame``, ACS lines included (line patterns only)."""
        if not self.is_line_mask:
            raise ValueError(f"sampled_lines is defined for line patterns {LINE_PATTERNS}, not {self.pattern}")
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)) or not 0 <= frame < self.n_frames:
            raise ValueError(f"frame must be an integer in [0, {self.n_frames}), got {frame!r}")
        return np.flatnonzero(self.mask[frame, :, 0] > 0).astype(np.int64)

    def acs_slice(self) -> tuple[slice, slice]:
        """(ky slice, kx slice) of the fully sampled calibration region.

        Line patterns: ``(slice(start, start + n_acs), slice(None))``; ktRadial: the centred
        ``n_acs x n_acs`` square. Index the last two axes of a mask or k-space with it.
        """
        ky = slice(acs_start(self.n_ky, self.n_acs), acs_start(self.n_ky, self.n_acs) + self.n_acs)
        if self.is_line_mask:
            return ky, slice(None)
        n_kx = int(self.mask.shape[2])
        return ky, slice(acs_start(n_kx, self.n_acs), acs_start(n_kx, self.n_acs) + self.n_acs)


def _acceleration_of(n_nonacs: int, n_sampled_nonacs: int, n_total: int, n_sampled: int) -> tuple[float, float]:
    realised = n_nonacs / n_sampled_nonacs if n_nonacs else 1.0
    return float(realised), float(n_total / n_sampled)


def _uniform_lines(acceleration: float, n_ky: int, offset: float = 0.0) -> np.ndarray:
    """ky = round(offset + k R) for k >= 0 inside [0, n_ky): MATLAB ``1:R:end`` for offset 0."""
    positions = round_half_up(offset + np.arange(0.0, n_ky, acceleration))
    return np.unique(positions[(positions >= 0) & (positions < n_ky)])


def _kt_uniform_lines(acceleration: float, n_frames: int, n_ky: int, acs: np.ndarray) -> np.ndarray:
    """Sheared lattice: frame t samples ky = round((t + o) mod R + k R) -> bool ``(frames, ky)``.

    The shear (one ky line per frame) is CMRxRecon's; a full cycle of R frames samples every ky
    once. Over a partial cycle (n_frames < R) the count outside the ACS depends on where the cycle
    starts, so the start ``o`` (0 .. ceil(R) - 1) is the one whose count lands closest to the
    nominal acceleration (the smallest such o; o = 0, CMRxRecon's, whenever it is as good).
    """
    target = n_frames * int((~acs).sum()) / acceleration
    best_error, best_lines = math.inf, np.zeros((n_frames, n_ky), dtype=bool)
    for start in range(int(math.ceil(acceleration))):
        lines = np.zeros((n_frames, n_ky), dtype=bool)
        for t in range(n_frames):
            lines[t, _uniform_lines(acceleration, n_ky, offset=math.fmod(float(t + start), acceleration))] = True
        error = abs(float(lines[:, ~acs].sum()) - target)
        if error < best_error - 1e-9:
            best_error, best_lines = error, lines
    return best_lines


def _diffused_counts(target_per_frame: float, n_frames: int) -> np.ndarray:
    """Per-frame integer counts whose running sum tracks ``target_per_frame * (t + 1)``."""
    cumulative = round_half_up(target_per_frame * np.arange(n_frames + 1))
    return np.diff(cumulative)


def _line_mask(pattern: str, acceleration: float, n_frames: int, n_ky: int, n_acs: int, seed: int) -> np.ndarray:
    acs = np.zeros(n_ky, dtype=bool)
    acs[acs_start(n_ky, n_acs):acs_start(n_ky, n_acs) + n_acs] = True
    lines = np.zeros((n_frames, n_ky), dtype=bool)
    if pattern == "Uniform":
        lines[:, _uniform_lines(acceleration, n_ky)] = True
    elif pattern == "ktUniform":
        lines[:] = _kt_uniform_lines(acceleration, n_frames, n_ky, acs)
    else:  # ktGaussian
        rng = np.random.default_rng(seed)
        candidates = np.flatnonzero(~acs)
        ky = candidates - n_ky // 2
        sigma = GAUSSIAN_SIGMA_FRACTION * n_ky
        density = 0.1 + GAUSSIAN_ALPHA / (1.0 - GAUSSIAN_ALPHA) * np.exp(-(ky.astype(np.float64) ** 2) / sigma**2)
        density /= density.sum()
        counts = _diffused_counts(candidates.size / acceleration, n_frames)
        for t in range(n_frames):
            chosen = rng.choice(candidates, size=int(min(counts[t], candidates.size)), replace=False, p=density)
            lines[t, chosen] = True
    lines[:, acs] = True
    return lines


def _spokes(angles_deg: np.ndarray, n_ky: int, n_kx: int) -> np.ndarray:
    """Rasterise spokes through the centre (length max(n_ky, n_kx)) -> bool ``(ky, kx)``.

    Points every half pixel along each spoke, rounded to the nearest grid location, so a spoke is
    an 8-connected run of pixels; angle 0 lies along kx.
    """
    half = max(n_ky, n_kx) / 2.0
    s = np.arange(-half, half + 0.25, 0.5)
    theta = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))[:, None]
    ky = round_half_up(n_ky // 2 + s * np.sin(theta)).ravel()
    kx = round_half_up(n_kx // 2 + s * np.cos(theta)).ravel()
    keep = (ky >= 0) & (ky < n_ky) & (kx >= 0) & (kx < n_kx)
    image = np.zeros((n_ky, n_kx), dtype=bool)
    image[ky[keep], kx[keep]] = True
    return image


def _radial_frame(n_spokes: int, rotation_deg: float, n_ky: int, n_kx: int) -> np.ndarray:
    angles = rotation_deg + np.arange(n_spokes) * (180.0 / n_spokes)
    return _spokes(angles, n_ky, n_kx)


def _radial_mask(acceleration: float, n_frames: int, n_ky: int, n_kx: int, n_acs: int) -> np.ndarray:
    acs = np.zeros((n_ky, n_kx), dtype=bool)
    acs[acs_start(n_ky, n_acs):acs_start(n_ky, n_acs) + n_acs, acs_start(n_kx, n_acs):acs_start(n_kx, n_acs) + n_acs] = True
    n_nonacs = n_ky * n_kx - n_acs * n_acs
    target_per_frame = n_nonacs / acceleration
    max_spokes = 4 * max(n_ky, n_kx)
    mask = np.zeros((n_frames, n_ky, n_kx), dtype=bool)
    sampled_so_far = 0
    for t in range(n_frames):
        rotation = math.fmod(t * RADIAL_FRAME_ROTATION_DEG, 180.0)
        need = int(round_half_up(target_per_frame * (t + 1))) - sampled_so_far

        def count(n: int, rotation: float = rotation) -> int:
            return int((_radial_frame(n, rotation, n_ky, n_kx) & ~acs).sum())

        # Smallest spoke count reaching `need` (count is close to monotone in n), then the closer
        # of it and its neighbour; the error left over is carried into the next frame.
        low, high = 1, max_spokes
        while low < high:
            middle = (low + high) // 2
            if count(middle) >= need:
                high = middle
            else:
                low = middle + 1
        best = min({max(low - 1, 1), low}, key=lambda n: (abs(count(n) - need), n))
        frame = _radial_frame(best, rotation, n_ky, n_kx) | acs
        mask[t] = frame
        sampled_so_far += int((frame & ~acs).sum())
    return mask


# --------------------------------------------------------------------------- official convention


def _official_line_mask(pattern: str, acceleration: float, n_frames: int, n_ky: int, n_acs: int,
                        seed: int) -> np.ndarray:
    """bool ``(frames, ky)`` of the official Uniform / ktUniform / ktGaussian recipes (ACS included)."""
    lines = np.zeros((n_frames, n_ky), dtype=bool)
    if pattern == "Uniform":
        lines[:, _uniform_lines(acceleration, n_ky)] = True
    elif pattern == "ktUniform":
        for t in range(n_frames):
            lines[t, _uniform_lines(acceleration, n_ky, offset=math.fmod(float(t), acceleration))] = True
    else:
        lines[:] = _official_gaussian_lines(acceleration, n_frames, n_ky, seed)
    lines[:, acs_start(n_ky, n_acs):acs_start(n_ky, n_acs) + n_acs] = True
    return lines


def _official_gaussian_lines(acceleration: float, n_frames: int, n_ky: int, seed: int) -> np.ndarray:
    """The official ktGaussian draw (without the ACS) -> bool ``(frames, ky)``; see the module doc."""
    per_frame = int(round_half_up(n_ky / acceleration))
    offsets = np.arange(n_ky, dtype=np.float64) - n_ky // 2
    sigma = n_ky / 5
    # the official density, including its 1e-10 guard, so the cumulative edges agree bit for bit
    density = 0.1 + GAUSSIAN_ALPHA / (1 - GAUSSIAN_ALPHA + 1e-10) * np.exp(-(offsets ** 2) / (sigma ** 2))
    edges = np.concatenate(([0.0], np.cumsum(density))) / density.sum()
    frame_seeds = round_half_up(1e6 * np.random.RandomState(seed).rand(n_frames))
    lines = np.zeros((n_frames, n_ky), dtype=bool)
    for t in range(n_frames):
        uniform = np.random.RandomState(int(frame_seeds[t])).rand(per_frame)
        drawn = np.clip(np.searchsorted(edges, uniform, side="right") - 1, 0, n_ky - 1)
        values, counts = np.unique(drawn, return_counts=True)
        taken = np.zeros(n_ky, dtype=bool)
        taken[values] = True
        # every extra draw of a line goes to the nearest line still free in this frame (lower first)
        for value, count in zip(values, counts):
            for _ in range(int(count) - 1):
                free = np.flatnonzero(~taken)
                if free.size == 0:
                    break
                nearest = free[int(np.argmin((free - value) ** 2))]
                taken[nearest] = True
        lines[t] = taken
    return lines


def official_radial_spokes(acceleration: float) -> int:
    """Spokes per frame of the official ktRadial at nominal ``acceleration`` (floor(180 / (0.6 R)))."""
    return int(np.floor((1 / (acceleration * OFFICIAL_RADIAL_FACTOR)) * 180))


def _rotation_matrix(side: int, angle_deg: float) -> np.ndarray:
    """Homogeneous inverse map of a rotation by ``angle_deg`` about the centre of a ``side`` square,
    built as ``skimage.transform.rotate`` builds it (translate, rotate, translate back)."""
    centre = side / 2.0 - 0.5
    theta = float(np.deg2rad(angle_deg))
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    to_origin = np.array([[1.0, 0.0, -centre], [0.0, 1.0, -centre], [0.0, 0.0, 1.0]])
    rotation = np.array([[cos_t, -sin_t, 0.0], [sin_t, cos_t, 0.0], [0.0, 0.0, 1.0]])
    back = np.array([[1.0, 0.0, centre], [0.0, 1.0, centre], [0.0, 0.0, 1.0]])
    matrix = back @ (rotation @ to_origin)
    matrix[2] = (0.0, 0.0, 1.0)
    return matrix


def _nearest_rotated_row(side: int, row: int, angle_deg: float, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """bool ``(len(rows), len(cols))``: the pixels (``rows``, ``cols`` consecutive index ranges) of a
    ``side x side`` image that holds only the line ``row``, after a rotation by ``angle_deg`` about
    the image centre with nearest-neighbour interpolation.

    An output pixel (x = column, y = row) samples the source at the homogeneous inverse map of
    :func:`_rotation_matrix`, rounded as floor(coordinate + 0.5), as
    ``skimage.transform.rotate(order=0, mode="constant")`` does, so that ties fall the same way.
    Only the few pixels next to the rotated line are evaluated.
    """
    matrix = _rotation_matrix(side, angle_deg)
    a, b, c = matrix[1]  # source row = a * x + b * y + c
    if abs(b) >= abs(a):  # walk the columns, a few rows each
        xs = cols.astype(np.float64)
        centre_y = (row - a * xs - c) / b
        reach = int(math.ceil(1.0 / abs(b))) + 1
        offsets = np.arange(-reach, reach + 1, dtype=np.float64)
        grid_x = np.repeat(xs, offsets.size)
        grid_y = (np.round(centre_y)[:, None] + offsets[None, :]).ravel()
    else:  # walk the rows, a few columns each
        ys = rows.astype(np.float64)
        centre_x = (row - b * ys - c) / a
        reach = int(math.ceil(1.0 / abs(a))) + 1
        offsets = np.arange(-reach, reach + 1, dtype=np.float64)
        grid_y = np.repeat(ys, offsets.size)
        grid_x = (np.round(centre_x)[:, None] + offsets[None, :]).ravel()
    inside = (grid_y >= rows[0]) & (grid_y <= rows[-1]) & (grid_x >= cols[0]) & (grid_x <= cols[-1])
    grid_x, grid_y = grid_x[inside], grid_y[inside]
    points = np.stack([grid_x, grid_y, np.ones(grid_x.size)], axis=1)
    source = points @ matrix.T
    hit = (np.floor(source[:, 1] + 0.5) == row) & (np.floor(source[:, 0] + 0.5) >= 0) \
        & (np.floor(source[:, 0] + 0.5) <= side - 1)
    image = np.zeros((rows.size, cols.size), dtype=bool)
    image[(grid_y[hit] - rows[0]).astype(np.int64), (grid_x[hit] - cols[0]).astype(np.int64)] = True
    return image


def official_radial_mask(n_spokes: int, n_frames: int, n_ky: int, n_kx: int, n_acs: int = OFFICIAL_N_ACS) -> np.ndarray:
    """bool ``(frames, ky, kx)`` of the official ktRadial recipe with ``n_spokes`` spokes per frame
    (``official_radial_spokes(R)`` for a nominal R), ACS square of side ``n_acs`` included."""
    n_spokes = check_int("n_spokes", n_spokes, 1)
    side = max(n_ky, n_kx)
    line_row = int(round_half_up(side / 2)) - 1
    step = 180 / n_spokes
    # the official image is (readout, phase encoding) = (kx, ky), cropped from the centre of the square
    rows = np.arange(acs_start(side, n_kx), acs_start(side, n_kx) + n_kx)
    cols = np.arange(acs_start(side, n_ky), acs_start(side, n_ky) + n_ky)
    mask = np.zeros((n_frames, n_ky, n_kx), dtype=bool)
    for t in range(n_frames):
        start = RADIAL_FRAME_ROTATION_DEG * t
        frame = np.zeros((n_kx, n_ky), dtype=bool)
        for angle in np.arange(start, 180 + start + step * 1e-10, step):
            frame |= _nearest_rotated_row(side, line_row, float(angle), rows, cols)
        mask[t] = frame.T
    ky0, kx0 = acs_start(n_ky, n_acs), acs_start(n_kx, n_acs)
    mask[:, ky0:ky0 + n_acs, kx0:kx0 + n_acs] = True
    return mask


def make_mask(
    pattern: str,
    acceleration: float,
    n_frames: int,
    n_ky: int,
    n_kx: int,
    *,
    n_acs: int | None = None,
    seed: int = 0,
    convention: str = "project",
) -> SamplingMask:
    """Build a CMRxRecon-style sampling mask.

    ``pattern``: one of MASK_PATTERNS, or "full" (all ones; acceleration must be 1).
    ``acceleration``: nominal R (not counting the ACS region), >= 1 (ktRadial: >= 2), at most
    what the grid allows (one line, or one short spoke, per frame outside the ACS).
    ``n_acs``: ACS lines (ktRadial: side of the ACS square); default 24 for Uniform, 16 otherwise
    (``convention="official"``: 20 for every family).
    ``seed``: seeds ktGaussian's draws; the other families are deterministic (official ktGaussian:
    the official code's ``gaussian_seed``, at most 2**32 - 1).
    ``convention``: "project" (default) or "official" (see the module docstring).

    Returns a SamplingMask whose ``mask`` is float32 ``(n_frames, n_ky, 1)`` for line patterns and
    "full", ``(n_frames, n_ky, n_kx)`` for ktRadial.
    """
    if not isinstance(pattern, str) or pattern not in MASK_PATTERNS + (FULL_PATTERN,):
        raise ValueError(f"pattern must be one of {MASK_PATTERNS + (FULL_PATTERN,)}, got {pattern!r}")
    if convention not in MASK_CONVENTIONS:
        raise ValueError(f"convention must be one of {MASK_CONVENTIONS}, got {convention!r}")
    official = convention == "official"
    n_frames = check_int("n_frames", n_frames, 1)
    n_ky = check_int("n_ky", n_ky, 1)
    n_kx = check_int("n_kx", n_kx, 1)
    seed = check_int("seed", seed, 0)
    if isinstance(acceleration, bool) or not isinstance(acceleration, (int, float, np.integer, np.floating)) \
            or not math.isfinite(acceleration) or acceleration < 1:
        raise ValueError(f"acceleration must be a finite number >= 1, got {acceleration!r}")
    acceleration = float(acceleration)

    if pattern == FULL_PATTERN:
        if acceleration != 1.0:
            raise ValueError(f"acceleration must be 1 for pattern 'full', got {acceleration!r}")
        mask = np.ones((n_frames, n_ky, 1), dtype=np.float32)
        return SamplingMask(mask, FULL_PATTERN, 1.0, 1.0, 1.0, n_ky)

    n_acs = default_n_acs(pattern, convention) if n_acs is None else check_int("n_acs", n_acs, 0)
    if official and pattern == "ktGaussian" and seed > 2**32 - 1:
        raise ValueError(f"seed must be at most 2**32 - 1 for the official ktGaussian, got {seed}")
    if n_acs >= n_ky:
        raise ValueError(f"n_acs must be smaller than n_ky={n_ky}, got n_acs={n_acs}")

    if pattern in LINE_PATTERNS:
        n_nonacs = n_ky - n_acs
        if acceleration > n_nonacs:
            raise ValueError(
                f"acceleration {acceleration:g} exceeds what the grid allows for {pattern} with n_ky={n_ky}, "
                f"n_acs={n_acs}: at most {n_nonacs} (one line per frame outside the ACS)"
            )
        if official:
            lines = _official_line_mask(pattern, acceleration, n_frames, n_ky, n_acs, seed)
        else:
            lines = _line_mask(pattern, acceleration, n_frames, n_ky, n_acs, seed)
        acs = slice(acs_start(n_ky, n_acs), acs_start(n_ky, n_acs) + n_acs)
        outside = np.ones(n_ky, dtype=bool)
        outside[acs] = False
        realised, effective = _acceleration_of(
            n_frames * n_nonacs, int(lines[:, outside].sum()), lines.size, int(lines.sum())
        )
        mask = lines.astype(np.float32)[:, :, None]
    else:
        if n_acs >= n_kx:
            raise ValueError(f"n_acs must be smaller than n_kx={n_kx} for ktRadial, got n_acs={n_acs}")
        if acceleration < RADIAL_MIN_ACCELERATION:
            raise ValueError(
                f"acceleration must be >= {RADIAL_MIN_ACCELERATION:g} for ktRadial (spokes of length "
                f"max(n_ky, n_kx) leave the corners unsampled), got {acceleration:g}"
            )
        n_nonacs = n_ky * n_kx - n_acs * n_acs
        max_acceleration = n_nonacs / max(min(n_ky, n_kx) - n_acs, 1)
        if official and official_radial_spokes(acceleration) < 1:
            raise ValueError(f"acceleration {acceleration:g} leaves no spoke for the official ktRadial "
                             f"(floor(180 / (0.6 R)) = 0)")
        if not official and acceleration > max_acceleration:
            raise ValueError(
                f"acceleration {acceleration:g} exceeds what the grid allows for ktRadial with "
                f"(n_ky, n_kx)=({n_ky}, {n_kx}), n_acs={n_acs}: at most {max_acceleration:.1f} (one spoke per frame)"
            )
        if official:
            sampled = official_radial_mask(official_radial_spokes(acceleration), n_frames, n_ky, n_kx, n_acs)
        else:
            sampled = _radial_mask(acceleration, n_frames, n_ky, n_kx, n_acs)
        n_sampled_nonacs = int(sampled.sum()) - n_frames * n_acs * n_acs  # the ACS square is all ones
        realised, effective = _acceleration_of(
            n_frames * n_nonacs, n_sampled_nonacs, sampled.size, int(sampled.sum())
        )
        mask = sampled.astype(np.float32)

    if not official and abs(realised - acceleration) > 0.1 * acceleration:
        logger.warning(
            "%s mask realises acceleration %.2f outside the ACS for nominal %.2f (n_frames=%d, n_ky=%d, n_kx=%d)",
            pattern, realised, acceleration, n_frames, n_ky, n_kx,
        )
    return SamplingMask(mask, pattern, acceleration, realised, effective, n_acs)
