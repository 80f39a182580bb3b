"""Fused loops for small blobs, compiled with numba when it is installed (optional).

A numpy loss makes 20 to 40 numpy calls per forward and backward, whatever the
size of the blob. On a small blob (32 x 20, say) those calls are nearly all of
the time: each costs about a microsecond, more than its arithmetic. Here a loss
is one compiled loop over the rows instead, which writes the gradient (times
everything but the top diff and the normalizer) for ``backward`` to scale:
the softmax losses, categorical cross-entropy and the sigmoid losses, on
``(N, C)`` blobs of up to ``MAX_SIZE`` elements (see
:meth:`functional.Loss.prepare`). From about 10,000 elements on numpy wins,
since its ``exp`` and ``log`` run on SIMD units. Binary cross-entropy and
``N x C x H x W`` blobs use numpy.

The softmax loops compute ``exp`` with :func:`_exp` (and categorical
cross-entropy ``log`` with :func:`_log`), written out in plain arithmetic (a
polynomial, and the float's exponent bits) rather than calling the C library
per element, so that the compiler can put a row's loop on SIMD units; they are
as accurate as the C library's (within 2.3e-16 relative in float64, which the
loops use throughout). The sigmoid loops take ``exp(-|s|)`` and
``log(1 + exp(-|s|))`` from numpy and do the rest, with no branch on the data.

The loops are strict: each returns a status, and anything but ``OK`` (a label
out of range, a negative weight, a sum that is not finite) sends the call to
the numpy code, which raises the error that names the problem or, for scores
that merely overflow a plain ``exp``, computes the loss. So the numpy code
stays the reference, and these loops only ever agree with it
(tests/in_caffe/test_jit.py). If numba fails to compile or run a loop, the
loss warns once and uses numpy from then on.

Set ``CAFFE_LOSSES_JIT=0`` in the environment to use numpy alone. Without
numba (or with a numba that does not import) ``ENABLED`` is False and nothing
here is compiled. The first call of each loop compiles it (about a second per
loop and dtype); numba caches the result next to this file, or in the user's
cache directory.
"""
import math
import os
import warnings

import numpy as np

try:
    if os.environ.get("CAFFE_LOSSES_JIT", "1").strip().lower() in ("0", "false", "no", "off"):
        raise ImportError("disabled by CAFFE_LOSSES_JIT")
    import numba
except Exception:  # not installed, or one that does not load with this numpy: numpy alone
    numba = None

ENABLED = numba is not None

# Above this many elements numpy outruns the loops: measured side by side, the loops took
# 0.25-0.38x numpy's time at 32x20, 0.6-0.8x at 64x128, 0.95-1.6x at 128x256
MAX_SIZE = 8192

OK, BAD_LABEL, BAD_WEIGHT, NOT_FINITE = 0, 1, 2, 3
SKIP = -1  # a row that does not count (inside the loops only)
# label and weight dtypes the loops take (the scores are float32 or float64)
DTYPES = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.bool_, np.int8, np.uint8,
                                         np.int16, np.uint16, np.int32, np.uint32, np.int64,
                                         np.uint64))
NO_ARRAY = np.zeros(0)  # no weights
ONES3 = np.ones((1, 1, 1))  # no weights, for a loop over planes


def _compile(fn, inline=False):
    # error_model "numpy": a division by zero gives inf or NaN (which the status reports)
    # instead of a Python exception, whose check would keep loops off the SIMD units
    if not ENABLED:
        return None
    # fastmath "reassoc" lets sums over a loop run on SIMD units too (in another order of
    # addition); "contract" allows fused multiply-adds. Nothing assumes away NaN or inf.
    options = dict(nogil=True, error_model="numpy", fastmath={"reassoc", "contract"},
                   inline="always" if inline else "never")
    try:
        return numba.njit(cache=True, **options)(fn)
    except Exception:  # no writable cache directory: compile in every process instead
        return numba.njit(**options)(fn)


def ignore_value(ignore_label):
    """The ignore label as the loops take it: NaN, which equals no label, for none."""
    return math.nan if ignore_label is None else float(ignore_label)


def failed(exc):
    """Warn (once) that a loop failed to compile or run; the caller goes on with numpy."""
    if not _FAILED:
        _FAILED.append(exc)
        warnings.warn("caffe_losses: a compiled loop failed (%s: %s); the losses use their "
                      "numpy code instead. Set CAFFE_LOSSES_JIT=0 to skip the loops."
                      % (type(exc).__name__, str(exc).splitlines()[0] if str(exc) else ""),
                      RuntimeWarning, stacklevel=4)


_FAILED = []


if ENABLED:
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def _bits_to_float(typingctx, value):
        """The float64 whose bits are the int64 ``value``."""
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(types.float64))
        return types.float64(types.int64), codegen

    @intrinsic
    def _float_to_bits(typingctx, value):
        """The bits of the float64 ``value`` as an int64."""
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(types.int64))
        return types.int64(types.float64), codegen
else:
    _bits_to_float = _float_to_bits = None

LOG2_E = 1.4426950408889634
LN2_HI = 6.93147180369123816490e-01  # ln 2 in two parts: k * LN2_HI is exact for |k| < 2^11
LN2_LO = 1.90821492927058770002e-10
SQRT2 = 1.4142135623730951


def _exp(x):
    """exp(x) in float64 for x <= 709 (the loops pass x <= 0): x = k ln 2 + r with
    |r| <= ln(2) / 2, the Taylor series of e^r to degree 13 (its remainder is below
    1e-17), times 2^k made from its bits. NaN stays NaN; below -708 it gives e^-708,
    about 3e-308, instead of a subnormal or 0."""
    x = -708.0 if x < -708.0 else x
    k = math.floor(x * LOG2_E + 0.5)
    r = (x - k * LN2_HI) - k * LN2_LO
    p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120 + r * (
        1.0 / 720 + r * (1.0 / 5040 + r * (1.0 / 40320 + r * (1.0 / 362880 + r * (
            1.0 / 3628800 + r * (1.0 / 39916800 + r * (1.0 / 479001600 + r / 6227020800.0))))))))))))
    return p * _bits_to_float((np.int64(k) + 1023) << 52)


def _log(x):
    """log(x) in float64 for a normal, positive, finite x: x = m 2^e with m in
    [sqrt(1/2), sqrt(2)), log m = 2 atanh(z), z = (m - 1) / (m + 1), |z| < 0.172, by its
    series to z^23 (remainder below 1e-19)."""
    bits = _float_to_bits(x)
    e = ((bits >> 52) & 0x7FF) - 1023
    m = _bits_to_float((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)
    big = m > SQRT2
    m = m * 0.5 if big else m
    e = e + 1 if big else e
    z = (m - 1.0) / (m + 1.0)
    z2 = z * z
    p = 1.0 + z2 * (1.0 / 3 + z2 * (1.0 / 5 + z2 * (1.0 / 7 + z2 * (1.0 / 9 + z2 * (1.0 / 11 + z2 * (
        1.0 / 13 + z2 * (1.0 / 15 + z2 * (1.0 / 17 + z2 * (1.0 / 19 + z2 * (1.0 / 21 + z2 / 23))))))))))
    return e * LN2_HI + (2.0 * z * p + e * LN2_LO)


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
    # the max in four independent chains (a NaN is passed over here; exp makes it NaN later)
    m0 = m1 = m2 = m3 = x[n, 0]
    end = 1 + (classes - 1) // 4 * 4
    for c in range(1, end, 4):
        m0 = x[n, c] if x[n, c] > m0 else m0
        m1 = x[n, c + 1] if x[n, c + 1] > m1 else m1
        m2 = x[n, c + 2] if x[n, c + 2] > m2 else m2
        m3 = x[n, c + 3] if x[n, c + 3] > m3 else m3
    for c in range(end, classes):
        m0 = x[n, c] if x[n, c] > m0 else m0
    m = np.float64(max(max(m0, m1), max(m2, m3)))
    for c in range(classes):  # apart from the sum, so that it runs on SIMD units
        g[n, c] = _exp(x[n, c] - m)
    s = 0.0
    for c in range(classes):
        s += g[n, c]
    return m, s


def _labelled_row(x, labels, w, n, ignore, g):
    """Row n of a sparse-label softmax loss: (status, weight, class index, max, sum of exp),
    with exp(s - max) in g[n]. Status SKIP for an ignored row (zero gradient)."""
    wn = _weight(w, n)
    if not wn >= 0:
        return BAD_WEIGHT, wn, 0, 0.0, 0.0
    label = labels[n]
    if label == ignore:  # no ignore label is NaN, which equals no label
        return (SKIP if _skip_row(x, n, g) else NOT_FINITE), wn, 0, 0.0, 0.0
    k = _class_index(label, x.shape[1])
    if k < 0:
        return BAD_LABEL, wn, 0, 0.0, 0.0
    m, s = _row_softmax(x, n, g)
    return OK, wn, k, m, s


def _softmax_cross_entropy(x, labels, w, a, eps, ignore, g):
    """SoftmaxCrossEntropy (2-d): status, loss sum, valid sum; gradient into g. ``a``: one
    class weight per class (ones for none)."""
    rows, classes = x.shape
    a_sum = 0.0
    for c in range(classes):
        a_sum += a[c]
    smooth = eps / classes
    total = 0.0
    valid = 0.0
    for n in range(rows):
        status, wn, k, m, s = _labelled_row(x, labels, w, n, ignore, g)
        if status == SKIP:
            continue
        if status != OK:
            return status, 0.0, 0.0
        log_z = m + math.log(s)
        a_y = a[k]
        picked = (1.0 - eps) * a_y
        loss = picked * (log_z - x[n, k])
        mass = picked
        if eps != 0:
            dot = 0.0
            for c in range(classes):
                dot += a[c] * x[n, c]
            loss += smooth * (a_sum * log_z - dot)
            mass += smooth * a_sum
        total += wn * loss
        valid += wn * a_y
        # w (Q p_c - q_c): q_c = eps/C a_c, plus (1 - eps) a_y at the label
        f = wn * mass / s
        for c in range(classes):
            g[n, c] = g[n, c] * f - wn * smooth * a[c]
        g[n, k] -= wn * picked
    if not math.isfinite(total):
        return NOT_FINITE, 0.0, 0.0
    return OK, total, valid


def _softmax_focal(x, labels, w, alpha, gamma, ignore, g):
    """SoftmaxFocal (2-d): status, loss sum, valid sum; gradient into g. ``alpha``: one
    value per class (ones for none)."""
    rows, classes = x.shape
    total = 0.0
    valid = 0.0
    for n in range(rows):
        status, wn, k, m, s = _labelled_row(x, labels, w, n, ignore, g)
        if status == SKIP:
            continue
        if status != OK:
            return status, 0.0, 0.0
        log_p = min(x[n, k] - m - math.log(s), 0.0)
        p = math.exp(log_p)
        rest = 1.0 - p
        modulation = rest ** gamma
        if rest > 0:
            factor = modulation * (1.0 - gamma * p * log_p / rest)
        else:  # log(p) / (1 - p) -> -1 as p -> 1
            factor = modulation * (1.0 + gamma * p)
        scale = wn * alpha[k]
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


def _row_targets(y, n, count_target):
    """Row n of dense labels: (any negative or NaN, label sum, divisor of the targets: the
    sum, or the number of non-zero labels)."""
    label_sum = 0.0
    nonzero = 0
    negative = False
    for c in range(y.shape[1]):
        v = y[n, c]
        negative |= not v >= 0
        label_sum += v
        nonzero += v != 0
    return negative, label_sum, (nonzero if count_target else label_sum)


def _multilabel_softmax(x, y, w, e, count_target, g, coefs, factors):
    """MultiLabelSoftmax (2-d): status, loss sum, valid sum.

    Without ``e`` (empty) the loop makes the exponentials and writes the gradient into g.
    With ``e``, exp(s) from numpy (its SIMD exp, for large blobs), it writes no gradient but
    each row's two factors, ``coefs`` and ``factors``, for :func:`_multilabel_softmax_grad`
    to make it in backward in one pass. A row of ``e`` whose sum leaves [1e-30, 1e30]
    (overflow, or every score very negative) is made again in ``e`` with the row's max
    subtracted; a row that does not count is set to 0 there."""
    rows, classes = x.shape
    given = e.size > 0
    total = 0.0
    valid = 0.0
    for n in range(rows):
        wn = _weight(w, n)
        if not wn >= 0:
            return BAD_WEIGHT, 0.0, 0.0
        negative, label_sum, denom = _row_targets(y, n, count_target)
        if negative:
            return BAD_LABEL, 0.0, 0.0
        if not denom > 0:  # no positive label: the location does not count
            if not _skip_row(x, n, e if given else g):
                return NOT_FINITE, 0.0, 0.0
            if given:
                coefs[n] = factors[n] = 0.0
            continue
        coef = wn / denom
        dot = 0.0
        for c in range(classes):
            dot += y[n, c] * x[n, c]
        s = 0.0
        if given:
            for c in range(classes):
                s += e[n, c]
        if given and s >= 1e-30 and s <= 1e30:
            log_z = math.log(s)
        elif given:
            m, s = _row_softmax(x, n, e)
            log_z = m + math.log(s)
        else:
            m, s = _row_softmax(x, n, g)
            f = coef * label_sum / s
            for c in range(classes):  # coef (label_sum p_c - y_c)
                g[n, c] = g[n, c] * f - coef * y[n, c]
            log_z = m + math.log(s)
        if given:
            coefs[n] = coef
            factors[n] = coef * label_sum / s
        total += coef * (label_sum * log_z - dot)
        valid += wn
    if not math.isfinite(total):
        return NOT_FINITE, 0.0, 0.0
    return OK, total, valid


def _multilabel_softmax_planes(x, y, w, e, count_target, coefs, factors, acc):
    """MultiLabelSoftmax on (outer, C, inner) blobs, exp(s) from numpy in ``e``: status, loss
    sum, valid sum; each location's two factors into ``coefs`` and ``factors`` (outer x
    inner), for :func:`_multilabel_softmax_grad` to make the gradient in backward. The
    locations of a plane (n, :, :) are worked on together, their sums in the rows of ``acc``
    (float64, 4 x inner), so that every loop runs along the contiguous inner axis. ``w`` is
    (outer, 1, inner) or (1, 1, 1) (none). A location whose exponentials overflow or all
    underflow sends the call to numpy."""
    outer, classes, inner = x.shape
    per_outer, per_inner = w.shape[0] > 1, w.shape[2] > 1
    label_sum, nonzero, exp_sum, dot = acc[0], acc[1], acc[2], acc[3]
    total = 0.0
    valid = 0.0
    for n in range(outer):
        coef, factor = coefs[n], factors[n]
        for i in range(inner):
            label_sum[i] = 0.0
            nonzero[i] = 0.0
            exp_sum[i] = 0.0
            dot[i] = 0.0
        negative = False
        for c in range(classes):  # one sum per loop: few arrays each, so that they run on SIMD
            for i in range(inner):
                v = y[n, c, i]
                negative |= not v >= 0
                label_sum[i] += v
            for i in range(inner):
                nonzero[i] += y[n, c, i] != 0
            for i in range(inner):
                exp_sum[i] += e[n, c, i]
            for i in range(inner):
                dot[i] += y[n, c, i] * x[n, c, i]
        if negative:
            return BAD_LABEL, 0.0, 0.0
        bad_weight = False
        out_of_range = False
        for i in range(inner):
            wv = np.float64(w[n * per_outer, 0, i * per_inner])
            bad_weight |= not wv >= 0
            s = exp_sum[i]
            out_of_range |= not (s >= 1e-30 and s <= 1e30)
            denom = nonzero[i] if count_target else label_sum[i]
            counted = denom > 0
            coef[i] = wv / denom if counted else 0.0
            factor[i] = coef[i] * label_sum[i] / s
            valid += wv if counted else 0.0
        if bad_weight:
            return BAD_WEIGHT, 0.0, 0.0
        if out_of_range:
            return NOT_FINITE, 0.0, 0.0
        for i in range(inner):
            total += coef[i] * (label_sum[i] * _log(exp_sum[i]) - dot[i])
    if not math.isfinite(total):
        return NOT_FINITE, 0.0, 0.0
    return OK, total, valid


def _multilabel_softmax_grad(e, y, coefs, factors, k, out):
    """The gradient of MultiLabelSoftmax on (N, C) arrays from forward's factors (one per
    row), times ``k``, into ``out``: out = k (factor e - coef y), in one pass."""
    for n in range(e.shape[0]):
        f = factors[n] * k
        cf = coefs[n] * k
        for c in range(e.shape[1]):
            out[n, c] = e[n, c] * f - cf * y[n, c]


def _multilabel_softmax_planes_grad(e, y, coefs, factors, k, out):
    """As :func:`_multilabel_softmax_grad`, for (outer, C, inner) arrays with factors per
    location (outer x inner; they are scaled by ``k`` in place)."""
    for n in range(e.shape[0]):
        for i in range(e.shape[2]):
            factors[n, i] *= k
            coefs[n, i] *= k
        for c in range(e.shape[1]):
            for i in range(e.shape[2]):
                out[n, c, i] = e[n, c, i] * factors[n, i] - coefs[n, i] * y[n, c, i]


def _categorical_cross_entropy(p, y, w, eps, count_target, g):
    """CrossEntropy, categorical (2-d): status, loss sum, valid sum; gradient into g."""
    rows, classes = p.shape
    total = 0.0
    valid = 0.0
    for n in range(rows):
        wn = _weight(w, n)
        if not wn >= 0:
            return BAD_WEIGHT, 0.0, 0.0
        wrong, label_sum, denom = _row_targets(y, n, count_target)
        for c in range(classes):
            wrong |= not (p[n, c] >= 0 and p[n, c] <= 1)
        if wrong:
            return BAD_LABEL, 0.0, 0.0
        coef = wn / denom if denom > 0 else 0.0
        if denom > 0:
            valid += wn
        for c in range(classes):
            q = np.float64(p[n, c])
            q = eps if q < eps else q
            total -= coef * y[n, c] * _log(q)  # q >= eps: a label of 0 adds 0
            g[n, c] = -coef * y[n, c] / q
    if not math.isfinite(total):
        return NOT_FINITE, 0.0, 0.0
    return OK, total, valid


def _make_sigmoid_focal(focus):
    """The SigmoidFocal loop for one kind of focal term, fixed when it is compiled so that
    no branch on it stays inside the loop: ``focus`` 0 (gamma 0: no focal term), 1, 2 (gamma
    1 or 2: no power needed) or 3 (any other gamma)."""

    def element(s, e, log1p_e, label, wv, rc, ac, gamma, alpha_pos, alpha_neg, ignore):
        """(loss, gradient, counted weight, positive weight, bad) of one element. Nothing
        branches on the data, so that the loop over a row runs on SIMD units: an ignored
        element gets weight 0 (which keeps a NaN score NaN, as in numpy); ``bad`` flags a
        label outside [0, 1] or a negative (or NaN) weight."""
        ignored = label == ignore
        bad = (not ignored) & (not ((label >= 0) & (label <= 1))) | (not wv >= 0)
        label = 0.0 if ignored else np.float64(label)
        wv = 0.0 if ignored else np.float64(wv)
        s = np.float64(s)
        sp = (s if s > 0 else 0.0) + log1p_e              # softplus(s)
        p = (1.0 if s >= 0 else e) / (1.0 + e)              # sigmoid(s)
        ry = rc * label
        ce = ry * (sp - s) + (1.0 - label) * sp
        d_ce = p * (1.0 - label + ry) - ry
        if focus:
            rest = p + label * (1.0 - 2.0 * p)             # 1 - p_t
            if focus == 2:
                power = rest
            elif focus == 1:
                power = 1.0
            else:  # rest held above 1e-30: the terms it multiplies vanish where it is 0
                power = math.exp((gamma - 1.0) * math.log(rest if rest > 1e-30 else 1e-30))
            d_ce = power * (rest * d_ce + gamma * (1.0 - 2.0 * label) * p * (1.0 - p) * ce)
            ce = power * rest * ce
        f = wv * ac * (alpha_pos * label + alpha_neg * (1.0 - label))
        return f * ce, f * d_ce, wv, label * wv, bad

    element = _compile(element, inline=True)

    def kernel(x, y, w, e, log1p_e, r, a, gamma, alpha_pos, alpha_neg, ignore, g):
        """On (N, C) arrays: status, loss sum, valid sum, positive label sum; gradient into
        g. numpy has put exp(-|s|) in ``e`` and log(1 + e) in ``log1p_e`` (its SIMD loops
        are faster than any here); this loop does the rest in one pass. ``w`` is (N, C),
        (N, 1) or (1, 1) (no weights); ``r`` and ``a`` hold one value per class; no alpha is
        alpha_pos = alpha_neg = 1; no ignore label is NaN, which equals no label."""
        rows, classes = x.shape
        per_element, per_row = w.shape[1] > 1, w.shape[0] > 1
        total = 0.0
        valid = 0.0
        positives = 0.0
        bad = False
        for n in range(rows):
            # two copies of the row loop, so that neither indexes the weights through a
            # run-time switch (which kept it off the SIMD units)
            if per_element:
                for c in range(classes):
                    loss, grad, counted, pos, wrong = element(
                        x[n, c], e[n, c], log1p_e[n, c], y[n, c], w[n, c], r[c], a[c], gamma,
                        alpha_pos, alpha_neg, ignore)
                    total += loss
                    g[n, c] = grad
                    valid += counted
                    positives += pos
                    bad |= wrong
            else:
                wn = w[n, 0] if per_row else w[0, 0]
                for c in range(classes):
                    loss, grad, counted, pos, wrong = element(
                        x[n, c], e[n, c], log1p_e[n, c], y[n, c], wn, r[c], a[c], gamma,
                        alpha_pos, alpha_neg, ignore)
                    total += loss
                    g[n, c] = grad
                    valid += counted
                    positives += pos
                    bad |= wrong
        if bad:
            return BAD_LABEL, 0.0, 0.0, 0.0
        if not math.isfinite(total):
            return NOT_FINITE, 0.0, 0.0, 0.0
        return OK, total, valid, positives

    return _compile(kernel)


if ENABLED:
    _exp = _compile(_exp, inline=True)
    _log = _compile(_log, inline=True)
    _weight = _compile(_weight, inline=True)
    _class_index = _compile(_class_index, inline=True)
    _skip_row = _compile(_skip_row, inline=True)
    _row_softmax = _compile(_row_softmax, inline=True)
    _labelled_row = _compile(_labelled_row, inline=True)
    _row_targets = _compile(_row_targets, inline=True)
softmax_cross_entropy = _compile(_softmax_cross_entropy)
softmax_focal = _compile(_softmax_focal)
multilabel_softmax = _compile(_multilabel_softmax)
multilabel_softmax_planes = _compile(_multilabel_softmax_planes)
multilabel_softmax_grad = _compile(_multilabel_softmax_grad)
multilabel_softmax_planes_grad = _compile(_multilabel_softmax_planes_grad)
categorical_cross_entropy = _compile(_categorical_cross_entropy)
# by focal term (see _make_sigmoid_focal and focus_of)
sigmoid_focal = [_make_sigmoid_focal(focus) if ENABLED else None for focus in range(4)]


def focus_of(gamma):
    """Which :data:`sigmoid_focal` loop a gamma takes."""
    return {0.0: 0, 1.0: 1, 2.0: 2}.get(float(gamma), 3)
ONES2 = np.ones((1, 1))  # no weights, for the element-wise loop
