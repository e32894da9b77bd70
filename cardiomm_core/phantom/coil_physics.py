"""The phantom's receive coils and noise: coil layout on the body, Biot-Savart sensitivities, the
coil noise covariance, correlated noise, and the modulations that make a plain FFT a centred one."""

from __future__ import annotations

import math

import numpy as np

from .anatomy import ScanGeometry, Subject

# --------------------------------------------------------------------------------------------
# Coils
# --------------------------------------------------------------------------------------------

def _array_grid(n: int) -> list[tuple[int, int, int]]:
    """(row, column, columns in that row) for ``n`` coils in rows along the stack axis."""
    rows = 1 if n < 4 else (2 if n <= 12 else 3)
    cols = math.ceil(n / rows)
    out = []
    for i in range(n):
        row = i // cols
        in_row = min(cols, n - row * cols)
        out.append((row, i % cols, in_row))
    return out


def _coil_layout(subject: Subject, geom: ScanGeometry, n_coils: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loop centres (C, 3), unit normals (C, 3) and radii (C,) in mm (x, y, z)."""
    n_ant = math.ceil(n_coils / 2)
    n_post = n_coils - n_ant
    bx, by = geom.body_center
    ax, ay, p = subject.body_ax, subject.body_ay, subject.body_p
    centres, normals, radii = [], [], []
    rows_ant = max(r for r, _, _ in _array_grid(n_ant)) + 1
    cols_ant = math.ceil(n_ant / rows_ant)
    spread = 2.4  # rad of the anterior arc
    r_ant = float(np.clip(0.7 * spread / max(cols_ant, 1) * 0.5 * (ax + ay) if cols_ant > 1 else 0.4 * ax, 50.0, 110.0))
    for row, col, in_row in _array_grid(n_ant):
        angle = -np.pi / 2 + spread * ((col + 0.5) / in_row - 0.5) if in_row > 1 else -np.pi / 2
        ca, sa = math.cos(angle), math.sin(angle)
        r = (abs(ca / ax) ** p + abs(sa / ay) ** p) ** (-1 / p)
        px, py = r * ca, r * sa
        normal = np.array([px / ax ** 2, py / ay ** 2, 0.0])
        normal /= np.linalg.norm(normal)
        z = (row - (rows_ant - 1) / 2) * 1.7 * r_ant
        centres.append(np.array([bx + px, by + py, z]) + 20.0 * normal)
        normals.append(normal)
        radii.append(r_ant)
    if n_post:
        rows_post = max(r for r, _, _ in _array_grid(n_post)) + 1
        cols_post = math.ceil(n_post / rows_post)
        r_post = float(np.clip(0.7 * 1.3 * ax / cols_post, 50.0, 110.0))
        for row, col, in_row in _array_grid(n_post):
            x = bx + 1.3 * ax * ((col + 0.5) / in_row - 0.5)
            z = (row - (rows_post - 1) / 2) * 1.7 * r_post
            centres.append(np.array([x, by + ay + 25.0, z]))
            normals.append(np.array([0.0, 1.0, 0.0]))
            radii.append(r_post)
    return np.array(centres), np.array(normals), np.array(radii)


def _biot_savart(points: np.ndarray, centre: np.ndarray, normal: np.ndarray, radius: float,
                 n_segments: int = 24, softening: float = 15.0) -> np.ndarray:
    """Field (N, 3) of a unit-current circular loop at ``points (N, 3)`` (mm, arbitrary units).

    Sum over straight segments of dl x r / |r|^3, the kernel softened by ``softening`` mm so the
    field stays finite at the wire.
    """
    helper = np.array([0.0, 0.0, 1.0]) if abs(normal[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(normal, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(normal, e1)
    phi = (np.arange(n_segments) + 0.5) * 2 * np.pi / n_segments
    mid = centre + radius * (np.cos(phi)[:, None] * e1 + np.sin(phi)[:, None] * e2)      # (Ns, 3)
    dl = radius * 2 * np.pi / n_segments * (-np.sin(phi)[:, None] * e1 + np.cos(phi)[:, None] * e2)
    rx = points[:, 0, None] - mid[None, :, 0]                                            # (N, Ns)
    ry = points[:, 1, None] - mid[None, :, 1]
    rz = points[:, 2, None] - mid[None, :, 2]
    inv = (rx * rx + ry * ry + rz * rz + softening ** 2) ** -1.5
    field = np.stack([
        ((dl[:, 1] * rz - dl[:, 2] * ry) * inv).sum(axis=1),
        ((dl[:, 2] * rx - dl[:, 0] * rz) * inv).sum(axis=1),
        ((dl[:, 0] * ry - dl[:, 1] * rx) * inv).sum(axis=1),
    ], axis=1)
    return field * 1000.0


def _interp_axis(values: np.ndarray, coarse: np.ndarray, fine: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``values`` sampled at ``coarse`` (ascending) to ``fine`` along ``axis``."""
    if len(coarse) == len(fine) and np.allclose(coarse, fine):
        return values
    idx = np.clip(np.searchsorted(coarse, fine) - 1, 0, len(coarse) - 2)
    t = np.clip((fine - coarse[idx]) / (coarse[idx + 1] - coarse[idx]), 0.0, 1.0).astype(np.float32)
    shape = [1] * values.ndim
    shape[axis] = len(fine)
    t = t.reshape(shape)
    return values.take(idx, axis=axis) * (1.0 - t) + values.take(idx + 1, axis=axis) * t


def _coarse_axis(fine: np.ndarray, step: float = 10.0) -> np.ndarray:
    n = int(math.ceil((fine[-1] - fine[0]) / step)) + 1
    if n >= len(fine):
        return fine.astype(np.float64)
    return np.linspace(float(fine[0]), float(fine[-1]), max(n, 2))


def coil_sensitivities(subject: Subject, geom: ScanGeometry, n_coils: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sensitivities (S, C, ny, nx_enc) complex64 and noise correlation (C, C) (mean diagonal 1).

    Evaluated on a coarse grid (10 mm) and interpolated linearly: the fields are smooth on the
    scale of the loops.
    """
    rng = np.random.default_rng([seed, 3, n_coils])
    centres, normals, radii = _coil_layout(subject, geom, n_coils)
    cy = _coarse_axis(geom.y)
    cx = _coarse_axis(geom.x_enc)
    yy, xx = np.meshgrid(cy, cx, indexing="ij")
    n_slices = len(geom.slice_z)
    shape = (n_slices,) + xx.shape
    points = np.stack([np.broadcast_to(xx, shape), np.broadcast_to(yy, shape),
                       np.broadcast_to(geom.slice_z[:, None, None], shape)], axis=-1).reshape(-1, 3)
    cable = np.exp(1j * rng.uniform(-np.pi, np.pi, n_coils))
    coarse = np.empty((n_coils, points.shape[0]), np.complex128)
    for c in range(n_coils):
        field = _biot_savart(points, centres[c], normals[c], radii[c])
        coarse[c] = (field[:, 0] - 1j * field[:, 1]) * cable[c]
    coarse = coarse.reshape(n_coils, n_slices, len(cy), len(cx)).transpose(1, 0, 2, 3)
    # Body mask on the coarse grid: noise correlation proxy and normalisation.
    bx, by = geom.body_center
    inside = (np.abs((xx - bx) / subject.body_ax) ** subject.body_p
              + np.abs((yy - by) / subject.body_ay) ** subject.body_p) < 1.0
    body = coarse[:, :, inside]                                                 # (S, C, Nb)
    scale = np.sqrt((np.abs(body) ** 2).sum(axis=1)).mean()
    coarse = (coarse / scale).astype(np.complex64)
    flat = body.transpose(1, 0, 2).reshape(n_coils, -1) / scale
    sample = flat @ flat.conj().T / flat.shape[1]
    sample /= np.real(np.diag(sample)).mean()
    receiver = np.diag(rng.uniform(0.7, 1.3, n_coils))
    correlation = 0.75 * sample + 0.25 * receiver
    correlation /= np.real(np.diag(correlation)).mean()
    sens = _interp_axis(coarse, cx, geom.x_enc.astype(np.float64), axis=3)
    sens = _interp_axis(sens, cy, geom.y.astype(np.float64), axis=2)
    return np.ascontiguousarray(sens, dtype=np.complex64), correlation


def fft_modulations(ny: int, nx: int) -> tuple[np.ndarray, np.ndarray]:
    """(pre, post) (ny, nx) complex64 with fft2c(x) = post * fft2(pre * x, norm="ortho").

    The centred transform without the two index shifts: for n0 = n // 2,
    fftshift(fft(ifftshift(x)))[k] = exp(-2 pi i n0^2 / n) exp(2 pi i n0 k / n) fft(x exp(2 pi i n0 m / n))[k].
    """
    def one(n: int) -> tuple[np.ndarray, np.ndarray]:
        n0, k = n // 2, np.arange(n)
        pre = np.exp(2j * np.pi * ((k * n0) % n) / n)
        post = pre * np.exp(-2j * np.pi * ((n0 * n0) % n) / n)
        return pre, post

    pre_y, post_y = one(ny)
    pre_x, post_x = one(nx)
    return np.outer(pre_y, pre_x).astype(np.complex64), np.outer(post_y, post_x).astype(np.complex64)


def correlated_noise(rng: np.random.Generator, covariance: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Complex Gaussian noise ``(C, *shape)`` complex64 with E[n n^H] = covariance."""
    n_coils = covariance.shape[0]
    size = int(np.prod(shape))
    if not np.any(covariance):
        return np.zeros((n_coils,) + shape, np.complex64)
    chol = np.linalg.cholesky(covariance.astype(np.complex128)).astype(np.complex64)
    white = np.empty((n_coils, size), np.complex64)
    white.real = rng.standard_normal((n_coils, size), dtype=np.float32)
    white.imag = rng.standard_normal((n_coils, size), dtype=np.float32)
    white *= np.float32(math.sqrt(0.5))
    return (chol @ white).reshape((n_coils,) + shape)
