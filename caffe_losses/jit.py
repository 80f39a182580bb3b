"""numba for the losses' kernels: compiling, statuses, and the math they share.

Each loss module has a plain numpy reference and a family of kernels, loops that
numba compiles when it is installed (``pip install .[fast]``; optional). A kernel does
a loss's forward (and, where it keeps factors instead of the gradient, its backward)
in one pass over the blob, so that a small blob costs one call instead of 20 to 40
numpy calls, and a large one reads its scores once or twice instead of once per numpy
operation. :meth:`caffe_losses.core.Loss.run_kernel` runs them all.

Kernels are strict: each returns a status first, and anything but ``OK`` (a label out
of range, a negative weight, a sum that is not finite) hands the call to the numpy
reference, which raises the error that names the problem or, for scores that merely
overflow an unshifted ``exp``, computes the loss. So the reference stays the oracle
and the kernels only ever agree with it (tests/in_caffe/test_jit.py). If numba fails
to compile or run a kernel, the loss warns once and uses its reference from then on.

The kernels compute ``exp`` with :func:`_exp_as`, in the scores' precision
(:func:`_exp32` for float32, :func:`_exp` for float64), and ``log`` with :func:`_log`,
written out in plain arithmetic (a polynomial and the float's exponent bits) rather
than a C library call per element, so that the compiler can put a loop on SIMD units;
they are as accurate as the C library's (float64: within 2.3e-16 relative) or numpy's
(float32: within 8e-8).

Set ``CAFFE_LOSSES_JIT=0`` in the environment to use the references alone. Without
numba (or with a numba that does not import) ``ENABLED`` is False and nothing here is
compiled. The first call of each kernel compiles it (about a second per kernel and
dtype); numba caches the result next to the module, or in the user's cache directory.
"""
import math
import os
import warnings

import numpy as np

SWITCHED_OFF = os.environ.get("CAFFE_LOSSES_JIT", "1").strip().lower() in ("0", "false", "no",
                                                                          "off")
try:
    if SWITCHED_OFF:
        raise ImportError("disabled by CAFFE_LOSSES_JIT")
    import numba
except Exception:  # not installed, or one that does not load with this numpy: numpy alone
    numba = None

ENABLED = numba is not None

# A kernel's status, its first output: anything but OK hands the call to the reference
OK, BAD_LABEL, BAD_WEIGHT, NOT_FINITE = 0, 1, 2, 3
SKIP = -1  # a row or location that does not count (inside the kernels only)
# label and weight dtypes the loops take (the scores are float32 or float64)
DTYPES = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.bool_, np.int8, np.uint8,
                                         np.int16, np.uint16, np.int32, np.uint32, np.int64,
                                         np.uint64))
# "No weights" as a kernel takes them, in the scores' dtype, so that a kernel called with
# weights in that dtype (as Caffe gives them) or without is one compiled function, not
# two: per dtype, an empty array for a kernel over rows (:func:`_weight` reads it as 1)
# and ones of 2 and 3 dimensions that broadcast, for the others.
NO_WEIGHTS = {np.dtype(t): (np.zeros(0, t), np.ones((1, 1), t), np.ones((1, 1, 1), t))
              for t in (np.float32, np.float64)}

# Kernels over N x C x H x W blobs take the locations of a plane (n, :, :) in blocks of
# PLANE_BLOCK, along the contiguous inner axis, and sum over PLANE_CLASSES classes at a
# time in the scores' dtype (at most 16 SIMD lanes' worth: relative error below 16 units
# of rounding), then in float64. Kernels over long rows sum ROW_CLASSES classes at a time
# in the scores' dtype for the same reason.
PLANE_BLOCK = 512
PLANE_CLASSES = 16
ROW_CLASSES = 256
# the rows of a planes kernel's block sums, at fixed offsets so that the compiler sees
# that they do not overlap
ROW1, ROW2, ROW3, ROW4 = (np.uint64(k * PLANE_BLOCK) for k in range(1, 5))


def in_dtype(array, dtype):
    """``array`` (None, or labels or weights) in ``dtype`` if that keeps every value, else
    as it is: numba compiles a kernel once per combination of argument types, so labels
    and weights in the scores' dtype (as Caffe gives them) keep it to one per dtype."""
    if array is None:
        return None
    array = np.asarray(array)
    if array.dtype == dtype:
        return array
    converted = array.astype(dtype)
    return converted if np.array_equal(converted, array) else array


# error_model "numpy": a division by zero gives inf or NaN (which the status reports)
# instead of a Python exception, whose check would keep loops off the SIMD units.
# fastmath "reassoc" lets sums over a loop run on SIMD units too (in another order of
# addition); "contract" allows fused multiply-adds. Nothing assumes away NaN or inf.
OPTIONS = dict(nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})


def _compile(fn, inline=False):
    """``fn`` compiled by numba (None without numba)."""
    if not ENABLED:
        return None
    options = dict(OPTIONS, inline="always" if inline else "never")
    try:
        return numba.njit(cache=True, **options)(fn)
    except Exception:  # no writable cache directory: compile in every process instead
        return numba.njit(**options)(fn)


def kernel(fn):
    """Decorator: a kernel, compiled on its first call (with numba; else left as Python).
    Every kernel is also in :data:`KERNELS`."""
    compiled = _compile(fn) if ENABLED else fn
    KERNELS.append(compiled)
    return compiled


KERNELS = []  # every kernel of every loss module, for the tests that compile them all


def inline(fn):
    """Decorator: a helper of kernels, inlined into them (with numba; else left as Python)."""
    return _compile(fn, inline=True) if ENABLED else fn


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

    @intrinsic
    def _float32_to_bits(typingctx, value):
        """The bits of the float32 ``value`` as an int32."""
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(types.int32))
        return types.int32(types.float32), codegen
else:
    _bits_to_float = _float_to_bits = _bits_to_float32 = _float32_to_bits = None

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


F32_SQRT2 = np.float32(SQRT2)
F32_LN2 = np.float32(math.log(2.0))
F32_ATANH6 = F32_ATANH[:5]


def _log32(x):
    """log(x) in float32 arithmetic for a normal, positive, finite float32 x: as
    :func:`_log`, with the series to z^11 (remainder below 1e-10); within 2e-7 relative
    of the true value. Its integer steps are int32, which SIMD units take on any x86-64
    (int64 ones they take only with AVX-512)."""
    c3, c5, c7, c9, c11 = F32_ATANH6
    bits = _float32_to_bits(x)
    e = ((bits >> 23) & 0xFF) - 127
    m = _bits_to_float32((bits & 0x007FFFFF) | 0x3F800000)
    big = m > F32_SQRT2
    m = m * F32_HALF if big else m
    e = e + 1 if big else e
    z = (m - F32_ONE) / (m + F32_ONE)
    z2 = z * z
    p = F32_ONE + z2 * (c3 + z2 * (c5 + z2 * (c7 + z2 * (c9 + z2 * c11))))
    return np.float32(e) * F32_LN2 + F32_TWO * z * p


def _log_as(x):
    """log(x) in the precision of x: :func:`_log32` for float32, else :func:`_log`
    (compiled loops only)."""
    raise NotImplementedError("for compiled loops only")


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


def _status(bad_label, bad_weight, not_finite):
    """The status of a kernel that gathered its problems as flags (the first that holds)."""
    if bad_label:
        return BAD_LABEL
    if bad_weight:
        return BAD_WEIGHT
    return NOT_FINITE if not_finite else OK


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


# -- row helpers of several kernels (rows of (N, C) blobs) ---------------------------

def _skip_row(x, n, g):
    """A row that does not count: zero gradient. False if it holds a score that is not
    finite, which the reference (computing every row) reports."""
    finite = True
    for c in range(x.shape[1]):
        g[n, c] = 0.0
        finite &= math.isfinite(x[n, c])
    return finite


def _row_max(x, n):
    """The largest score of row n, in four independent chains (a NaN is passed over here;
    exp makes it NaN later)."""
    classes = x.shape[1]
    m0 = m1 = m2 = m3 = x[n, 0]
    end = 1 + (classes - 1) // 4 * 4
    for c in range(1, end, 4):
        m0 = x[n, c] if x[n, c] > m0 else m0
        m1 = x[n, c + 1] if x[n, c + 1] > m1 else m1
        m2 = x[n, c + 2] if x[n, c + 2] > m2 else m2
        m3 = x[n, c + 3] if x[n, c + 3] > m3 else m3
    for c in range(end, classes):
        m0 = x[n, c] if x[n, c] > m0 else m0
    return max(max(m0, m1), max(m2, m3))


def _row_softmax(x, n, g):
    """exp(s - max) of row n into g[n]; returns (max, sum)."""
    classes = x.shape[1]
    m = _row_max(x, n)
    # apart from the sum, so that it runs on SIMD units, in the scores' precision
    for c in range(classes):
        g[n, c] = _exp_as(x[n, c] - m)
    s = 0.0
    for c in range(classes):
        s += g[n, c]
    return np.float64(m), s


def _row_targets(y, n, count_target):
    """Row n of dense labels: (any negative or NaN, label sum, divisor of the targets:
    the label sum, or the number of non-zero labels)."""
    label_sum = 0.0
    nonzero = 0
    negative = False
    for c in range(y.shape[1]):
        v = y[n, c]
        negative |= not v >= 0
        label_sum += v
        nonzero += v != 0
    return negative, label_sum, (nonzero if count_target else label_sum)


if ENABLED:
    _exp = _compile(_exp, inline=True)
    _exp32 = _compile(_exp32, inline=True)
    _log1p32 = _compile(_log1p32, inline=True)
    _log = _compile(_log, inline=True)
    _log32 = _compile(_log32, inline=True)
    _weight = _compile(_weight, inline=True)
    _status = _compile(_status, inline=True)
    _class_index = _compile(_class_index, inline=True)
    _skip_row = _compile(_skip_row, inline=True)
    _row_max = _compile(_row_max, inline=True)
    _row_softmax = _compile(_row_softmax, inline=True)
    _row_targets = _compile(_row_targets, inline=True)

    # Not inline="always": numba 0.6x's check of the code it inlines from an overload
    # warns on these (NumbaIRAssumptionWarning). Compiled apart, with the kernels' options
    # (above all the numpy error model: Python's puts a zero check in each division), they
    # are small calls that LLVM inlines into the loops, which stay on SIMD units.
    @overload(_exp_as, jit_options=OPTIONS)
    def _exp_as_overload(x):
        if x == types.float32:
            return lambda x: _exp32(x)
        return lambda x: _exp(np.float64(x))

    @overload(_log1p_as, jit_options=OPTIONS)
    def _log1p_as_overload(v):
        if v == types.float32:
            return lambda v: _log1p32(v)
        return lambda v: _log(1.0 + np.float64(v))

    @overload(_log_as, jit_options=OPTIONS)
    def _log_as_overload(x):
        if x == types.float32:
            return lambda x: _log32(x)
        return lambda x: _log(np.float64(x))
