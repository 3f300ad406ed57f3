"""Spatial padding of (N, C, *spatial) arrays and its adjoint.

``pads`` holds one (before, after) pair per spatial axis. Modes: ``constant``
(fill value), ``reflect`` (mirror without repeating the edge, as numpy's reflect)
and ``edge`` (replicate the border).
"""

import numpy as np


def forward(x, pads, mode, value=0.0):
    width = ((0, 0), (0, 0)) + tuple(pads)
    if mode == "constant":
        return np.pad(x, width, mode="constant", constant_values=np.asarray(value, dtype=x.dtype))
    return np.pad(x, width, mode=mode)


def backward(dy, pads, mode):
    """Gradient with respect to the unpadded input: fold each padded border back onto its source."""
    dx = dy
    for axis, (before, after) in enumerate(pads, start=2):
        dx = _foldAxis(np.moveaxis(dx, axis, -1), before, after, mode)
        dx = np.moveaxis(dx, -1, axis)
    return np.ascontiguousarray(dx)


def _foldAxis(g, before, after, mode):
    n = g.shape[-1] - before - after
    dx = g[..., before:before + n].copy()
    if mode == "reflect":
        # Padded position before - j (j = 1..before) copies input j; after the map, n - 1 + j copies n - 1 - j.
        dx[..., 1:before + 1] += g[..., before - 1::-1][..., :before] if before else 0
        dx[..., n - 1 - after:n - 1] += g[..., before + n:][..., ::-1] if after else 0
    elif mode == "edge":
        dx[..., 0] += g[..., :before].sum(axis=-1)
        dx[..., n - 1] += g[..., before + n:].sum(axis=-1)
    return dx
