"""Central finite differences of a scalar function, for gradient checks."""
import numpy as np


def numeric_gradient(f, x, step):
    """d f / d x by central differences; ``f`` reads ``x`` (modified in place and restored)."""
    grad = np.zeros(x.shape, dtype=np.float64)
    flat = x.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + step
        up = f()
        flat[i] = old - step
        down = f()
        flat[i] = old
        grad.reshape(-1)[i] = (up - down) / (2 * step)
    return grad
