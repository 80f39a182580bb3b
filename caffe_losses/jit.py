"""Fused loops for the losses, compiled with numba when it is installed (optional).

A numpy loss makes 20 to 40 numpy calls per forward and backward, whatever the
size of the blob. On a small blob (32 x 20, say) those calls are nearly all of
the time: each costs about a microsecond, more than its arithmetic. Here a loss
is one compiled loop over the rows instead, which writes the gradient (times
everything but the top diff and the normalizer) for ``backward`` to scale:
the softmax losses, categorical cross-entropy and the sigmoid losses, on
``(N, C)`` blobs of up to ``MAX_SIZE`` elements (see
:meth:`functional.Loss.prepare`). Beyond that the sparse softmax losses and
categorical cross-entropy use numpy, whose ``exp`` and ``log`` run on SIMD
units; binary cross-entropy always does.

The loops compute ``exp`` with :func:`_exp_as`, in the scores' precision
(:func:`_exp32` for float32, :func:`_exp` for float64), and categorical
cross-entropy ``log`` with :func:`_log`, all written out in plain arithmetic (a
polynomial, and the float's exponent bits) rather than calling the C library
per element, so that the compiler can put a row's loop on SIMD units; they are
as accurate as the C library's (float64: within 2.3e-16 relative) or numpy's
(float32: within 8e-8).

Two losses have loops for every size:

* The sigmoid losses: numpy makes ``exp(-|s|)`` and ``log(1 + exp(-|s|))``
  (:func:`_sigmoid_terms` does, on small blobs) and the loop the rest, with no
  branch on the data.
* MultiLabelSoftmax on large ``(N, C)`` and on ``N x C x H x W`` blobs. On
  those, memory bandwidth bounds the time, so its loops read the scores and
  labels once per pass and make ``exp(s)`` themselves, in the scores' precision
  (:func:`_exp32` for float32: as accurate as numpy's, as fast, and no blob of
  exponentials to write and read back).

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

# The all-in-one loops' limit. With a float64 exp, numpy outran them above it: they took
# 0.25-0.38x numpy's time at 32x20, 0.6-0.8x at 64x128, 0.95-1.6x at 128x256. With the
# float32 exp the sparse softmax loops win at 128x256 and tie at 256x1000 (make bench-jit),
# so it could be higher for them
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
    from numba.extending import intrinsic, overload

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

    @intrinsic
    def _bits_to_float32(typingctx, value):
        """The float32 whose bits are the int32 ``value``."""
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(types.float32))
        return types.float32(types.int32), codegen
else:
    _bits_to_float = _float_to_bits = _bits_to_float32 = None

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


# float32 constants for _exp32 (a plain Python float would turn its arithmetic into float64)
F32_LOG2_E = np.float32(LOG2_E)
F32_LN2_HI = np.float32(0.693359375)  # 355 / 512: k * F32_LN2_HI is exact for |k| <= 128
F32_LN2_LO = np.float32(LN2_HI - 0.693359375 + LN2_LO)
F32_LOW, F32_HIGH = np.float32(-87.0), np.float32(88.0)
F32_HALF, F32_ONE = np.float32(0.5), np.float32(1.0)
F32_TAYLOR = tuple(np.float32(1.0 / math.factorial(k)) for k in range(3, 8))
F32_BIAS, F32_SHIFT = np.int32(127), np.int32(23)


def _exp32(x):
    """exp(x) in float32 arithmetic, for float32 scores up to 88: as _exp, with the
    Taylor series to degree 7 (remainder below 6e-9); within 8e-8 relative of the true value
    (numpy's float32 exp: 2e-7). 16 of them fit a SIMD register, against 8 float64. x is
    held within [-87, 88]: below, it gives e^-87 (about 1.6e-38) instead of a subnormal or
    0; above, e^88 (1.7e38) instead of inf. NaN stays NaN."""
    c3, c4, c5, c6, c7 = F32_TAYLOR
    x = F32_LOW if x < F32_LOW else x
    x = F32_HIGH if x > F32_HIGH else x
    k = np.floor(x * F32_LOG2_E + F32_HALF)
    r = (x - k * F32_LN2_HI) - k * F32_LN2_LO
    p = F32_ONE + r * (F32_ONE + r * (F32_HALF + r * (c3 + r * (c4 + r * (c5 + r * (c6 + r * c7))))))
    return p * _bits_to_float32((np.int32(k) + F32_BIAS) << F32_SHIFT)


F32_ATANH = tuple(np.float32(1.0 / k) for k in range(3, 17, 2))
F32_TWO = np.float32(2.0)


def _log1p32(v):
    """log(1 + v) in float32 arithmetic for a float32 v in [0, 1]: 2 atanh(z) with
    z = v / (2 + v) <= 1/3, by its series to z^15 (remainder below 2e-9). 1 + v is never
    formed, so a tiny v keeps its digits."""
    c3, c5, c7, c9, c11, c13, c15 = F32_ATANH
    z = v / (F32_TWO + v)
    z2 = z * z
    p = F32_ONE + z2 * (c3 + z2 * (c5 + z2 * (c7 + z2 * (c9 + z2 * (c11 + z2 * (
        c13 + z2 * c15))))))
    return F32_TWO * z * p


def _exp_as(x):
    """exp(x) in the precision of x: :func:`_exp32` for float32, else :func:`_exp`
    (compiled loops only)."""
    raise NotImplementedError("for compiled loops only")


def _log1p_as(v):
    """log(1 + v) for v in [0, 1], in the precision of v: :func:`_log1p32` for float32,
    else :func:`_log` (compiled loops only)."""
    raise NotImplementedError("for compiled loops only")


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
    m = max(max(m0, m1), max(m2, m3))
    # apart from the sum, so that it runs on SIMD units; in the scores' precision (float32:
    # twice the lanes and a shorter polynomial, 0.75x the time of the loss at 32x20)
    for c in range(classes):
        g[n, c] = _exp_as(x[n, c] - m)
    s = 0.0
    for c in range(classes):
        s += g[n, c]
    return np.float64(m), s


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
        p = min(g[n, k] / s, 1.0)  # exp(s_y - m) / sum: no exp call (0.85x the loop's time)
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


def _multilabel_softmax(x, y, w, count_target, g):
    """MultiLabelSoftmax on small (N, C) blobs: status, loss sum, valid sum; the gradient
    into g."""
    rows, classes = x.shape
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
            if not _skip_row(x, n, g):
                return NOT_FINITE, 0.0, 0.0
            continue
        coef = wn / denom
        dot = 0.0
        for c in range(classes):
            dot += y[n, c] * x[n, c]
        m, s = _row_softmax(x, n, g)
        f = coef * label_sum / s
        for c in range(classes):  # coef (label_sum p_c - y_c)
            g[n, c] = g[n, c] * f - coef * y[n, c]
        total += coef * (label_sum * (m + math.log(s)) - dot)
        valid += wn
    if not math.isfinite(total):
        return NOT_FINITE, 0.0, 0.0
    return OK, total, valid


# The loops for large blobs, (N, C) rows above MAX_SIZE elements and N x C x H x W planes,
# read the scores and labels once and make exp(s) themselves (:func:`_exp_as`, in the
# scores' precision) rather than have numpy write them out and read them back: memory,
# not arithmetic, bounds them. They keep two factors per location, from which backward
# makes the gradient in one more pass, making exp(s) again. Sums over classes run in the
# scores' dtype over at most 16 SIMD lanes' worth of classes at a time (relative error
# below 16 units of rounding), then in float64.
ROW_CLASSES = 256


def _row_sums(x, y, n, count_target, typed):
    """Row n of (N, C) arrays: (any label negative or NaN, label sum, sum of labels times
    scores, sum of exp(s), number of non-zero labels if ``count_target``). ``typed`` is
    an array in the scores' dtype, for the type of the partial sums."""
    classes = x.shape[1]
    label_sum = dot = exp_sum = nonzero = 0.0
    negative = False
    zero = typed[0] * 0
    for c0 in range(0, classes, ROW_CLASSES):
        c1 = min(c0 + ROW_CLASSES, classes)
        xr, yr = x[n, c0:c1], y[n, c0:c1]  # slices: x[n, c] kept the loop off SIMD units
        labels, products, exps = zero, zero, zero
        for c in range(c1 - c0):
            v = yr[c]
            negative |= not v >= 0
            labels += v
            products += v * xr[c]
            exps += _exp_as(xr[c])
        label_sum += labels
        dot += products
        exp_sum += exps
        if count_target:
            for c in range(c1 - c0):
                nonzero += yr[c] != 0
    return negative, label_sum, dot, exp_sum, nonzero


def _multilabel_softmax_rows(x, y, w, count_target, coefs, factors, shifts, typed):
    """MultiLabelSoftmax on large (N, C) blobs: status, loss sum, valid sum; per row the
    two factors and the shift of the scores that :func:`_multilabel_softmax_rows_grad`
    takes. A row whose sum of exp(s) leaves [1e-20, 1e30] (overflow, or every score very
    negative) is summed again with its max subtracted (its shift; else 0)."""
    rows, classes = x.shape
    total = 0.0
    valid = 0.0
    for n in range(rows):
        wn = _weight(w, n)
        if not wn >= 0:
            return BAD_WEIGHT, 0.0, 0.0
        negative, label_sum, dot, s, nonzero = _row_sums(x, y, n, count_target, typed)
        if negative:
            return BAD_LABEL, 0.0, 0.0
        if not math.isfinite(dot):  # an infinite score (0 x inf is NaN), or NaN
            return NOT_FINITE, 0.0, 0.0
        shift = 0.0
        if not (s >= 1e-20 and s <= 1e30):
            shift = -np.inf
            for c in range(classes):
                shift = max(shift, np.float64(x[n, c]))
            s = 0.0
            for c in range(classes):
                s += _exp(x[n, c] - shift)
            if not (s >= 1.0 and s < np.inf):  # a NaN or infinite score
                return NOT_FINITE, 0.0, 0.0
        shifts[n] = shift
        denom = nonzero if count_target else label_sum
        if not denom > 0:  # no positive label: the location does not count
            coefs[n] = factors[n] = 0.0
            continue
        coef = wn / denom
        coefs[n] = coef
        factors[n] = coef * label_sum / s
        total += coef * (label_sum * (shift + math.log(s)) - dot)
        valid += wn
    if not math.isfinite(total):
        return NOT_FINITE, 0.0, 0.0
    return OK, total, valid


def _multilabel_softmax_rows_grad(x, y, coefs, factors, shifts, k, out, typed):
    """The gradient of MultiLabelSoftmax on (N, C) arrays from the factors of
    :func:`_multilabel_softmax_rows`, times ``k``, into ``out``: k (factor exp(s - shift)
    - coef y). ``typed`` (3 values in the scores' dtype) takes a row's numbers, so that the
    loop runs in that dtype."""
    for n in range(x.shape[0]):
        typed[0] = factors[n] * k
        typed[1] = coefs[n] * k
        typed[2] = shifts[n]
        f, cf, shift = typed[0], typed[1], typed[2]
        xr, yr, row = x[n], y[n], out[n]
        for c in range(x.shape[1]):
            row[c] = _exp_as(xr[c] - shift) * f - cf * yr[c]


# The planes loops take the locations of a plane (n, :, :) in blocks of PLANE_BLOCK, and
# sum over PLANE_CLASSES classes at a time in the scores' dtype
PLANE_BLOCK = 512
PLANE_CLASSES = 16
ROW1, ROW2, ROW3, ROW4 = (np.uint64(k * PLANE_BLOCK) for k in range(1, 5))  # row offsets


def _multilabel_softmax_planes(x, y, w, count_target, coefs, factors, part, acc):
    """MultiLabelSoftmax on (outer, C, inner) blobs: status, loss sum, valid sum; each
    location's two factors into ``coefs`` and ``factors`` (outer x inner, float64), from
    which :func:`_multilabel_softmax_planes_grad` makes the gradient.

    Memory, not arithmetic, bounds a loop over a large blob, so this one reads the scores
    and labels once and makes exp(s) itself (:func:`_exp_as`, in the scores' precision)
    rather than have numpy write them out and read them back. Every loop runs along the
    contiguous inner axis, over a block of locations at a time, with the sums of the
    block's locations in ``part`` (4 x PLANE_BLOCK values in the scores' dtype, the rows at
    fixed offsets so that the compiler sees they do not overlap) and ``acc`` (5 x
    PLANE_BLOCK, float64). ``w`` is (outer, 1, inner) or (1, 1, 1) (none). A location whose exponentials
    overflow or all but underflow sends the call to numpy, which shifts the scores."""
    outer, classes, inner = x.shape
    per_outer, per_inner = w.shape[0] > 1, w.shape[2] > 1
    b = PLANE_BLOCK  # the rows' offsets, fixed
    blk = part.shape[0] // 4  # the same number, as bound of the loops: a fixed bound kept
    # them off the SIMD units
    total = 0.0
    valid = 0.0
    negative = False
    bad_weight = False
    out_of_range = False
    for n in range(outer):
        for i0 in range(0, inner, blk):
            m = min(blk, inner - i0)
            # (loops over 4 * b, a fixed number, ran 10x slower than these over m)
            for i in range(m):
                acc[i] = acc[b + i] = acc[2 * b + i] = acc[3 * b + i] = 0.0
            for c0 in range(0, classes, PLANE_CLASSES):
                for i in range(m):
                    part[i] = part[b + i] = part[2 * b + i] = part[3 * b + i] = 0
                for c in range(c0, min(c0 + PLANE_CLASSES, classes)):
                    yc, xc = y[n, c, i0:i0 + m], x[n, c, i0:i0 + m]
                    for i in range(m):
                        v = yc[i]
                        negative |= not v >= 0
                        part[i] += v
                        part[b + i] += v * xc[i]
                        part[2 * b + i] += _exp_as(xc[i])
                    if count_target:
                        for i in range(m):
                            part[3 * b + i] += yc[i] != 0
                for i in range(m):
                    acc[i] += part[i]
                    acc[b + i] += part[b + i]
                    acc[2 * b + i] += part[2 * b + i]
                if count_target:
                    for i in range(m):
                        acc[3 * b + i] += part[3 * b + i]
            # acc now holds label sums, dot products, exp sums and non-zero labels; then the
            # weights, in a loop of their own so that the next one runs on SIMD units.
            # Unsigned indices from here: numba then adds no negative-index fix, which the
            # compiler failed to rule out here and which kept these loops off SIMD units.
            if per_inner:
                weights = w[n * per_outer, 0, i0:i0 + m]
                for i in range(np.uint64(m)):
                    acc[ROW4 + i] = weights[i]
            else:
                wn = np.float64(w[n * per_outer, 0, 0])
                for i in range(np.uint64(m)):
                    acc[ROW4 + i] = wn
            coef, factor = coefs[n, i0:i0 + m], factors[n, i0:i0 + m]
            for i in range(np.uint64(m)):  # no short-circuit "and"; one division
                wv = acc[ROW4 + i]
                s = acc[ROW2 + i]
                bad_weight |= not wv >= 0
                out_of_range |= (s < 1e-20) | (s > 1e30) | (s != s)
                denom = acc[ROW3 + i] if count_target else acc[i]
                counted = denom > 0
                r = wv / (denom * s) if counted else 0.0
                coef[i] = r * s  # w / denom
                factor[i] = r * acc[i]  # coef label_sum / s
                valid += wv if counted else 0.0
            for i in range(np.uint64(m)):  # a loop of its own: with the one above, 10x slower
                total += coef[i] * (acc[i] * _log(acc[ROW2 + i]) - acc[ROW1 + i])
        if negative:
            return BAD_LABEL, 0.0, 0.0
        if bad_weight:
            return BAD_WEIGHT, 0.0, 0.0
        if out_of_range:
            return NOT_FINITE, 0.0, 0.0
    if not math.isfinite(total):
        return NOT_FINITE, 0.0, 0.0
    return OK, total, valid


def _exp_sums_planes(x, part, acc, sums):
    """Sum of exp(s) over the classes per location of an (outer, C, inner) blob into
    ``sums`` (outer x inner): OK, or NOT_FINITE if a sum leaves [1e-20, 1e30] (then the
    caller shifts the scores). For the sparse softmax losses' numpy code on large blobs:
    with :func:`_exp_times_planes` it stands in for a blob of exponentials written out and
    read back twice. ``part`` and ``acc`` as for :func:`_multilabel_softmax_planes`."""
    outer, classes, inner = x.shape
    blk = part.shape[0] // 4  # a runtime bound (see _multilabel_softmax_planes)
    bad = False
    for n in range(outer):
        for i0 in range(0, inner, blk):
            m = min(blk, inner - i0)
            for i in range(m):
                acc[i] = 0.0
            for c0 in range(0, classes, PLANE_CLASSES):
                for i in range(m):
                    part[i] = 0
                for c in range(c0, min(c0 + PLANE_CLASSES, classes)):
                    xc = x[n, c, i0:i0 + m]
                    for i in range(m):
                        part[i] += _exp_as(xc[i])
                for i in range(m):
                    acc[i] += part[i]
            out = sums[n, i0:i0 + m]
            for i in range(np.uint64(m)):
                v = acc[i]
                bad |= (v < 1e-20) | (v > 1e30) | (v != v)
                out[i] = v
    return NOT_FINITE if bad else OK


def _exp_times_planes(x, factor, out):
    """out = exp(s) times a factor per location (``factor``: outer x inner, in the scores'
    dtype), for an (outer, C, inner) blob whose sums :func:`_exp_sums_planes` checked."""
    outer, classes, inner = x.shape
    for n in range(outer):
        f = factor[n]
        for c in range(classes):
            xc, oc = x[n, c], out[n, c]
            for i in range(inner):
                oc[i] = _exp_as(xc[i]) * f[i]


def _multilabel_softmax_planes_grad(x, y, coefs, factors, k, out, part):
    """The gradient of MultiLabelSoftmax on (outer, C, inner) arrays from the factors of
    :func:`_multilabel_softmax_planes`, times ``k``, into ``out``: k (factor exp(s) -
    coef y), with exp(s) made again (reading the scores costs what reading kept
    exponentials would). ``part`` (4 x PLANE_BLOCK, scores' dtype) holds a block's factors."""
    outer, classes, inner = x.shape
    b = part.shape[0] // 4  # PLANE_BLOCK (as a fixed number, it kept the loop off SIMD units)
    f, cf = part[:b], part[b:2 * b]
    for n in range(outer):
        for i0 in range(0, inner, b):
            m = min(b, inner - i0)
            for i in range(m):
                f[i] = factors[n, i0 + i] * k
                cf[i] = coefs[n, i0 + i] * k
            for c in range(classes):
                xc, yc, oc = x[n, c, i0:i0 + m], y[n, c, i0:i0 + m], out[n, c, i0:i0 + m]
                for i in range(m):
                    oc[i] = _exp_as(xc[i]) * f[i] - cf[i] * yc[i]


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


def _sigmoid_terms(x, e, log1p_e):
    """exp(-|s|) into ``e`` and log(1 + exp(-|s|)) into ``log1p_e``, for 1-d arrays: what
    numpy makes for the sigmoid loops, in one call (on small blobs its five calls cost more
    than their arithmetic)."""
    # (numba does not check bounds: the loop stays within all three arrays, which the caller
    # makes the same size)
    for i in range(min(x.shape[0], e.shape[0], log1p_e.shape[0])):
        v = _exp_as(-abs(x[i]))
        e[i] = v
        log1p_e[i] = _log1p_as(v)


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
    _exp32 = _compile(_exp32, inline=True)
    _log1p32 = _compile(_log1p32, inline=True)
    _log = _compile(_log, inline=True)
    _weight = _compile(_weight, inline=True)
    _class_index = _compile(_class_index, inline=True)
    _skip_row = _compile(_skip_row, inline=True)
    _row_softmax = _compile(_row_softmax, inline=True)
    _labelled_row = _compile(_labelled_row, inline=True)
    _row_targets = _compile(_row_targets, inline=True)
    _row_sums = _compile(_row_sums, inline=True)

    @overload(_exp_as, inline="always")
    def _exp_as_overload(x):
        if x == types.float32:
            return lambda x: _exp32(x)
        return lambda x: _exp(np.float64(x))

    @overload(_log1p_as, inline="always")
    def _log1p_as_overload(v):
        if v == types.float32:
            return lambda v: _log1p32(v)
        return lambda v: _log(1.0 + np.float64(v))
softmax_cross_entropy = _compile(_softmax_cross_entropy)
softmax_focal = _compile(_softmax_focal)
multilabel_softmax = _compile(_multilabel_softmax)
multilabel_softmax_rows = _compile(_multilabel_softmax_rows)
multilabel_softmax_rows_grad = _compile(_multilabel_softmax_rows_grad)
multilabel_softmax_planes = _compile(_multilabel_softmax_planes)
exp_sums_planes = _compile(_exp_sums_planes)
exp_times_planes = _compile(_exp_times_planes)
multilabel_softmax_planes_grad = _compile(_multilabel_softmax_planes_grad)
categorical_cross_entropy = _compile(_categorical_cross_entropy)
sigmoid_terms = _compile(_sigmoid_terms)
# by focal term (see _make_sigmoid_focal and focus_of)
sigmoid_focal = [_make_sigmoid_focal(focus) if ENABLED else None for focus in range(4)]


def focus_of(gamma):
    """Which :data:`sigmoid_focal` loop a gamma takes."""
    return {0.0: 0, 1.0: 1, 2.0: 2}.get(float(gamma), 3)
ONES2 = np.ones((1, 1))  # no weights, for the element-wise loop
