"""Plain, loop-based float64 references written from the formulas.

Deliberately slow and obvious: no vectorization, no shared code with the
package, so that a wrong formula in the package shows up as a difference.
"""
import math


def softmax_row(scores):
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def locations(shape):
    """Yield (n, spatial index tuple) for a shape (N, C, *spatial)."""
    import itertools
    spatial = shape[2:]
    for n in range(shape[0]):
        for rest in itertools.product(*[range(d) for d in spatial]):
            yield n, rest


def multilabel_softmax_loss(scores, labels, weights=None, target="sum", normalization="batch_size"):
    """Reference for class axis 1. weights: None, per sample (N,) or per location (N, *spatial)."""
    shape = scores.shape
    total = 0.0
    valid = 0.0
    n_locations = 0
    for n, rest in locations(shape):
        n_locations += 1
        s = [float(scores[(n, c) + rest]) for c in range(shape[1])]
        y = [float(labels[(n, c) + rest]) for c in range(shape[1])]
        if weights is None:
            w = 1.0
        elif weights.ndim == 1:
            w = float(weights[n])
        else:
            w = float(weights[(n,) + rest])
        if target == "sum":
            denom = sum(y)
        else:
            denom = float(sum(1 for v in y if v != 0))
        if denom <= 0:
            continue
        valid += w
        p = softmax_row(s)
        total += w * -sum((yc / denom) * math.log(pc) for yc, pc in zip(y, p))
    z = {"full": n_locations, "valid": valid, "batch_size": shape[0], "none": 1}[normalization]
    return total / max(1.0, z)
