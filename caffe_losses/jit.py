"""Fused loops for small blobs, compiled with numba when it is installed (optional).

A numpy loss makes 20 to 40 numpy calls per forward and backward, whatever the
size of the blob. On a small blob (32 x 20, say) those calls are nearly all of
the time: each costs about a microsecond, more than its arithmetic. Here each
loss is one compiled loop over the blob instead, which writes the gradient
(times everything but the top diff and the normalizer) for ``backward`` to
scale. On large blobs numpy wins: its ``exp`` and ``log`` run on SIMD units,
numba's call the C library one value at a time. So the losses use these loops
only up to ``MAX_SIZE`` elements (see :meth:`functional.Loss.prepare`).

The loops are strict: each returns a status, and anything but ``OK`` (a label
out of range, a negative weight, a sum that is not finite) sends the call to
the numpy code, which raises the error that names the problem or, for scores
that merely overflow a plain ``exp``, computes the loss. So the numpy code
stays the reference, and these loops only ever agree with it.

Set ``CAFFE_LOSSES_JIT=0`` in the environment to use numpy alone. Without
numba (or with a numba that does not import) ``ENABLED`` is False and nothing
here is compiled.
"""
import math
import os

import numpy as np

try:
    if os.environ.get("CAFFE_LOSSES_JIT", "1").strip().lower() in ("0", "false", "no", "off"):
        raise ImportError("disabled by CAFFE_LOSSES_JIT")
    import numba
except Exception:  # not installed, or one that does not load with this numpy: numpy alone
    numba = None

ENABLED = numba is not None

# Above this many elements numpy's SIMD exp and log outrun a scalar loop (measured at
# about 10,000 to 20,000 elements for the softmax losses on this project's machines).
MAX_SIZE = 8192

OK, BAD_LABEL, BAD_WEIGHT, NOT_FINITE = 0, 1, 2, 3
# label and weight dtypes the loops take (the scores are float32 or float64)
DTYPES = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.bool_, np.int8, np.uint8,
                                         np.int16, np.uint16, np.int32, np.uint32, np.int64,
                                         np.uint64))
NO_ARRAY = np.zeros(0)        # "no per-class values" / "no weights"
NO_ARRAY3 = np.zeros((0, 0, 0))


def _compile(fn):
    return numba.njit(cache=True, nogil=True)(fn) if ENABLED else None


def _weight(w, n):
    """Weight of row n (1 without weights); NaN for an invalid one."""
    if w.size == 0:
        return 1.0
    v = w[n]
    return v if v >= 0 else np.nan


def _class_index(label, classes):
    """The class index a label stands for, or -1 if it is none."""
    if label >= 0 and label <= classes - 1:
        k = int(label)
        if k == label:
            return k
    return -1


def _skip_row(x, n, g):
    """A row that does not count: zero gradient. False if it holds a score that is not
    finite, which the numpy code (computing every row) reports."""
    finite = True
    for c in range(x.shape[1]):
        g[n, c] = 0.0
        finite &= math.isfinite(x[n, c])
    return finite


def _row_softmax(x, n, g):
    """exp(s - max) of row n into g[n]; returns (max, sum)."""
    classes = x.shape[1]
    m = x[n, 0]
    for c in range(1, classes):
        if x[n, c] > m:
            m = x[n, c]
    s = 0.0
    for c in range(classes):
        e = math.exp(x[n, c] - m)
        g[n, c] = e
        s += e
    return m, s


def _softmax_cross_entropy(x, labels, w, a, eps, has_ignore, ignore, g):
    """SoftmaxCrossEntropy (2-d): status, loss sum, valid sum; gradient into g."""
    rows, classes = x.shape
    weighted = a.size > 0
    a_sum = 0.0
    for c in range(classes):
        a_sum += a[c] if weighted else 1.0
    smooth = eps / classes
    total = 0.0
    valid = 0.0
    for n in range(rows):
        wn = _weight(w, n)
        if not wn >= 0:
            return BAD_WEIGHT, 0.0, 0.0
        label = labels[n]
        if has_ignore and label == ignore:
            if not _skip_row(x, n, g):
                return NOT_FINITE, 0.0, 0.0
            continue
        k = _class_index(label, classes)
        if k < 0:
            return BAD_LABEL, 0.0, 0.0
        m, s = _row_softmax(x, n, g)
        log_z = m + math.log(s)
        a_y = a[k] if weighted else 1.0
        picked = (1.0 - eps) * a_y
        loss = picked * (log_z - x[n, k])
        mass = picked
        if eps != 0:
            dot = 0.0
            for c in range(classes):
                dot += (a[c] if weighted else 1.0) * x[n, c]
            loss += smooth * (a_sum * log_z - dot)
            mass += smooth * a_sum
        total += wn * loss
        valid += wn * a_y
        # w (Q p_c - q_c): q_c = eps/C a_c, plus (1 - eps) a_y at the label
        f = wn * mass / s
        for c in range(classes):
            g[n, c] = g[n, c] * f - wn * smooth * (a[c] if weighted else 1.0)
        g[n, k] -= wn * picked
    if not math.isfinite(total):
        return NOT_FINITE, 0.0, 0.0
    return OK, total, valid


def _softmax_focal(x, labels, w, alpha, gamma, has_ignore, ignore, g):
    """SoftmaxFocal (2-d): status, loss sum, valid sum; gradient into g."""
    rows, classes = x.shape
    total = 0.0
    valid = 0.0
    for n in range(rows):
        wn = _weight(w, n)
        if not wn >= 0:
            return BAD_WEIGHT, 0.0, 0.0
        label = labels[n]
        if has_ignore and label == ignore:
            if not _skip_row(x, n, g):
                return NOT_FINITE, 0.0, 0.0
            continue
        k = _class_index(label, classes)
        if k < 0:
            return BAD_LABEL, 0.0, 0.0
        m, s = _row_softmax(x, n, g)
        log_p = min(x[n, k] - m - math.log(s), 0.0)
        p = math.exp(log_p)
        rest = 1.0 - p
        modulation = rest ** gamma
        if rest > 0:
            factor = modulation * (1.0 - gamma * p * log_p / rest)
        else:  # log(p) / (1 - p) -> -1 as p -> 1
            factor = modulation * (1.0 + gamma * p)
        scale = wn * (alpha[k] if alpha.size > 0 else 1.0)
        total -= scale * modulation * log_p
        valid += wn
        f = scale * factor
        # f (p_c - [c = y])
        inv = f / s
        for c in range(classes):
            g[n, c] *= inv
        g[n, k] -= f
    if not math.isfinite(total):
        return NOT_FINITE, 0.0, 0.0
    return OK, total, valid


def _multilabel_softmax(x, y, w, count_target, g):
    """MultiLabelSoftmax (2-d): status, loss sum, valid sum; gradient into g."""
    rows, classes = x.shape
    total = 0.0
    valid = 0.0
    for n in range(rows):
        wn = _weight(w, n)
        if not wn >= 0:
            return BAD_WEIGHT, 0.0, 0.0
        label_sum = 0.0
        nonzero = 0
        for c in range(classes):
            v = y[n, c]
            if not v >= 0:
                return BAD_LABEL, 0.0, 0.0
            label_sum += v
            nonzero += v != 0
        denom = nonzero if count_target else label_sum
        if not denom > 0:  # no positive label: the location does not count
            if not _skip_row(x, n, g):
                return NOT_FINITE, 0.0, 0.0
            continue
        coef = wn / denom
        m, s = _row_softmax(x, n, g)
        log_z = m + math.log(s)
        dot = 0.0
        for c in range(classes):
            dot += y[n, c] * x[n, c]
        total += coef * (label_sum * log_z - dot)
        valid += wn
        # coef (label_sum p_c - y_c)
        f = coef * label_sum / s
        for c in range(classes):
            g[n, c] = g[n, c] * f - coef * y[n, c]
    if not math.isfinite(total):
        return NOT_FINITE, 0.0, 0.0
    return OK, total, valid


def _sigmoid_focal(x, y, w, r, a, gamma, alpha, has_alpha, has_ignore, ignore, g):
    """SigmoidFocal on (outer, C, inner) arrays: status, loss sum, valid sum, positive
    label sum; gradient into g. ``w`` is (outer, 1 or C, inner) or empty."""
    outer, classes, inner = x.shape
    focal = gamma != 0
    total = 0.0
    valid = 0.0
    positives = 0.0
    for n in range(outer):
        for c in range(classes):
            rc = r[c] if r.size > 0 else 1.0
            ac = a[c] if a.size > 0 else 1.0
            for i in range(inner):
                wv = 1.0
                if w.size > 0:
                    wv = w[n, c if w.shape[1] > 1 else 0, i]
                    if not wv >= 0:
                        return BAD_WEIGHT, 0.0, 0.0, 0.0
                label = y[n, c, i]
                s = x[n, c, i]
                if has_ignore and label == ignore:
                    if not math.isfinite(s):  # as numpy, which computes it anyway
                        return NOT_FINITE, 0.0, 0.0, 0.0
                    g[n, c, i] = 0.0
                    continue
                if not (label >= 0 and label <= 1):
                    return BAD_LABEL, 0.0, 0.0, 0.0
                t = math.exp(-abs(s))
                # softplus(s); log(1 + t) for log1p(t) (twice as fast): they differ only where
                # t is below the float resolution next to 1, as in the numpy code
                sp = max(s, 0.0) + math.log(1.0 + t)
                p = 1.0 / (1.0 + t) if s >= 0 else t / (1.0 + t)
                ry = rc * label
                ce = ry * (sp - s) + (1.0 - label) * sp
                d_ce = p * (1.0 - label + ry) - ry
                if focal:
                    rest = p + label * (1.0 - 2.0 * p)  # 1 - p_t
                    if gamma == 2.0:  # (1 - p_t)^(gamma - 1) without pow, whose call is slow
                        power = rest
                    elif gamma == 1.0:
                        power = 1.0
                    else:
                        power = max(rest, 1e-30) ** (gamma - 1.0)
                    d_ce = power * (rest * d_ce + gamma * (1.0 - 2.0 * label) * p * (1.0 - p) * ce)
                    ce = power * rest * ce
                f = wv * ac
                if has_alpha:
                    f *= alpha * label + (1.0 - alpha) * (1.0 - label)
                total += f * ce
                g[n, c, i] = f * d_ce
                valid += wv
                positives += label * wv
    if not math.isfinite(total):
        return NOT_FINITE, 0.0, 0.0, 0.0
    return OK, total, valid, positives


def _categorical_cross_entropy(p, y, w, eps, count_target, g):
    """CrossEntropy, categorical (2-d): status, loss sum, valid sum; gradient into g."""
    rows, classes = p.shape
    total = 0.0
    valid = 0.0
    for n in range(rows):
        wn = _weight(w, n)
        if not wn >= 0:
            return BAD_WEIGHT, 0.0, 0.0
        label_sum = 0.0
        nonzero = 0
        for c in range(classes):
            v = y[n, c]
            q = p[n, c]
            if not (v >= 0 and q >= 0 and q <= 1):
                return BAD_LABEL, 0.0, 0.0
            label_sum += v
            nonzero += v != 0
        denom = nonzero if count_target else label_sum
        coef = wn / denom if denom > 0 else 0.0
        if denom > 0:
            valid += wn
        for c in range(classes):
            q = max(p[n, c], eps)
            if y[n, c] != 0:
                total -= coef * y[n, c] * math.log(q)
            g[n, c] = -coef * y[n, c] / q
    if not math.isfinite(total):
        return NOT_FINITE, 0.0, 0.0
    return OK, total, valid


def _binary_cross_entropy(p, y, w, eps, has_ignore, ignore, g):
    """CrossEntropy, binary, on (outer, C, inner) arrays: status, loss sum, valid sum;
    gradient into g. ``w`` is (outer, 1 or C, inner) or empty."""
    outer, classes, inner = p.shape
    total = 0.0
    valid = 0.0
    for n in range(outer):
        for c in range(classes):
            for i in range(inner):
                wv = 1.0
                if w.size > 0:
                    wv = w[n, c if w.shape[1] > 1 else 0, i]
                    if not wv >= 0:
                        return BAD_WEIGHT, 0.0, 0.0
                label = y[n, c, i]
                q = p[n, c, i]
                if not (q >= 0 and q <= 1):
                    return BAD_LABEL, 0.0, 0.0
                if has_ignore and label == ignore:
                    g[n, c, i] = 0.0
                    continue
                if not (label >= 0 and label <= 1):
                    return BAD_LABEL, 0.0, 0.0
                q = min(max(q, eps), 1.0 - eps)
                total -= wv * (label * math.log(q) + (1.0 - label) * math.log(1.0 - q))
                g[n, c, i] = wv * (q - label) / (q * (1.0 - q))
                valid += wv
    if not math.isfinite(total):
        return NOT_FINITE, 0.0, 0.0
    return OK, total, valid


if ENABLED:
    _weight = _compile(_weight)
    _class_index = _compile(_class_index)
    _skip_row = _compile(_skip_row)
    _row_softmax = _compile(_row_softmax)
softmax_cross_entropy = _compile(_softmax_cross_entropy)
softmax_focal = _compile(_softmax_focal)
multilabel_softmax = _compile(_multilabel_softmax)
sigmoid_focal = _compile(_sigmoid_focal)
categorical_cross_entropy = _compile(_categorical_cross_entropy)
binary_cross_entropy = _compile(_binary_cross_entropy)
