"""Helpers shared by several test modules."""

import numpy as np


def central_fd(f, x, h=1e-5):
    """Central finite-difference gradient of a scalar function ``f`` at ``x`` (any shape)."""
    x = np.asarray(x, float)
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        g[idx] = (f(x + e) - f(x - e)) / (2 * h)
    return g
