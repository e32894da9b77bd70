"""CardioMM core: numerics, data models and the reconstruction network.

Depends on torch and numpy only (never on gadgetron, ismrmrd or lightning).

Tensor conventions (see DESIGN.md):
    kspace  (batch, coils, frames, ky, kx)   complex64
    mask    (batch, 1, frames, ky, kx)        broadcastable; line masks have kx = 1
    images  (batch, frames, y, x)             complex64
    sens    (batch, coils, 1, y, x)           complex64, broadcast over frames
"""

__version__ = "0.1.0"
