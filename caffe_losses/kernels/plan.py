"""A plan: the kernels a loss runs on scores of one shape and dtype, with their arguments.

A loss makes its plan when the shape or dtype of its scores changes (``Loss.plan``,
which calls the ``plan`` function of its module in this package); the core runs it at
every call. A plan holds:

* ``kernel``, the forward kernel, called as ``kernel(x, y, w, ...)``: the scores, labels
  and weights in the shapes the kernel takes, then its other parameters, which the plan
  finds by name among its arguments once, when it is made;
* ``grad``, the gradient that the forward kernel writes (its argument ``grad``), or else
  ``backward``, a kernel called as ``backward(x, y, ..., k, out)`` that makes the
  gradient times ``k`` into ``out`` from what the forward kernel kept (its parameters
  between ``y`` and ``k`` found by name alike).

Every forward kernel returns ``(ok, loss sum, valid sum)``, or with a fourth item the
sum of the positive labels (for ``normalization: "positive"``), all times the weights.
``ok`` False declines the call: a label or weight the kernel cannot take, or a sum that
is not finite. The reference then takes the call, and raises the error that names the
input or computes what the kernel's shortcut could not (scores whose unshifted ``exp``
overflows).
"""
import inspect
import math

import numpy as np

from . import jit

# label and weight dtypes the kernels take (the scores are float32 or float64)
DTYPES = frozenset(np.dtype(t) for t in (np.float32, np.float64, np.bool_, np.int8, np.uint8,
                                         np.int16, np.uint16, np.int32, np.uint32, np.int64,
                                         np.uint64))
SCORE_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

# "No weights" as a kernel takes them: ones that broadcast, in the scores' dtype, so that a
# kernel called with weights in that dtype (as Caffe gives them) or without is one
# compiled function, not two.
NO_WEIGHTS = {np.dtype(t): {ndim: np.ones((1,) * ndim, t) for ndim in (2, 3)}
              for t in SCORE_DTYPES}


def in_dtype(array, dtype):
    """``array`` (labels or weights) in ``dtype`` if that keeps every value, else as it is:
    numba compiles a kernel once per combination of argument types, so labels and weights
    in the scores' dtype (as Caffe gives them) keep it to one per dtype."""
    converted = array.astype(dtype)
    return converted if np.array_equal(converted, array) else array


def or_nan(value):
    """A number as the kernels take a number that may be None (an ignore label, the
    focal loss's alpha): NaN for None, which equals no number."""
    return math.nan if value is None else float(value)


def per_column(value, columns):
    """None, one number or one per class, as the 1-d float64 array the kernels take: one
    value per column of the rows they loop over (ones for None)."""
    value = 1.0 if value is None else value
    return np.broadcast_to(np.asarray(value, np.float64).reshape(-1), (columns,)).copy()


def element_rows(ws):
    """The (rows, columns) in which an element-wise kernel takes scores of work shape
    ``ws``: an ``(N, C)`` blob as it is, an ``(outer, C, inner)`` one as ``outer * C`` rows
    of ``inner`` elements (every element of a row one class)."""
    return (ws[0] * ws[1], ws[2]) if len(ws) == 3 else ws


_NAMES = {}


def parameters(kernel):
    """The names of a kernel's parameters, from its Python definition."""
    names = _NAMES.get(kernel)
    if names is None:
        names = _NAMES[kernel] = tuple(inspect.signature(
            getattr(kernel, "py_func", kernel)).parameters)
    return names


class Plan(object):
    """The kernels of one loss for scores of one shape and dtype (see the module docstring).

    ``work`` is the shape in which the core hands the scores over (``(outer, C)`` or
    ``(outer, C, inner)``); ``scores`` and ``labels`` the shapes in which the kernel takes
    them (``scores`` defaults to ``work``). ``arguments`` holds every other argument of the
    kernels, by the name of their parameter.
    """

    def __init__(self, kernel, work, labels, scores=None, backward=None, **arguments):
        self.kernel, self.backward_kernel = kernel, backward
        self.scores = work if scores is None else scores
        self.labels = labels
        self.reshaped = self.scores != work
        dtype = arguments.pop("dtype")
        self.no_weights = NO_WEIGHTS[dtype][len(self.scores)]
        grad = arguments.get("grad")
        self.grad = None if grad is None else grad.reshape(work)
        self.k = np.empty(1, dtype)  # the factor of backward, in the gradient's dtype
        names = parameters(kernel)[3:]
        self.arguments = tuple(arguments[name] for name in names)
        if backward is not None:
            back = parameters(backward)[2:-2]
            self.backward_arguments = tuple(arguments[name] for name in back)
            names += back
        unused = set(arguments) - set(names)
        if unused:
            raise TypeError("no kernel of the plan takes %s" % ", ".join(sorted(unused)))
        self.x = self.y = None

    def forward(self, x, labels, weights):
        """Run the forward kernel on ``x`` (scores in the work shape), labels as given and
        weights that broadcast against ``x`` (or None): ``(loss sum, valid sum[, positive
        sum])``, or None where the kernel declines."""
        dtype = x.dtype
        if labels.dtype != dtype:
            labels = in_dtype(labels, dtype)
            if labels.dtype not in DTYPES:
                return None
        if weights is None:
            w = self.no_weights
        else:
            w = weights if weights.dtype == dtype else in_dtype(weights, dtype)
            if w.dtype not in DTYPES:
                return None
            if self.reshaped:  # the kernel's rows are not locations: weights per score only
                if w.size != x.size:
                    return None
                w = w.reshape(self.scores)
        if self.reshaped:
            x = x.reshape(self.scores)
        if labels.shape != self.labels:
            labels = labels.reshape(self.labels)
        self.x, self.y = x, labels
        out = self.kernel(x, labels, w, *self.arguments)
        return out[1:] if out[0] else None

    def backward(self, out, k):
        """The gradient of the last forward times ``k`` into ``out`` (the work shape)."""
        if self.backward_kernel is None:
            _scale(self.grad, k, self.k, out)
        else:
            self.backward_kernel(self.x, self.y, *self.backward_arguments, k, out)


# The kept gradient times k: one call, where numpy's multiply by a Python float costs
# about twice as much on a small blob; k in the gradient's dtype (through ``typed``).
# Both arrays are C-contiguous (the plan's buffer, a blob's diff), so one flat loop serves
# rows and planes.

@jit.kernel
def _scale(grad, k, typed, out):
    typed[0] = k
    kt = typed[0]
    flat, flat_out = grad.reshape(grad.size), out.reshape(out.size)
    for i in range(flat.size):
        flat_out[i] = flat[i] * kt
