r"""Knowledge distillation (Hinton, Vinyals and Dean, 2015): the student's scores
:math:`s` against a teacher's scores :math:`t` of the same shape, both softened by the
temperature :math:`T`. The teacher's scores are a target: they get no gradient.

**Softmax form** (``activation="softmax"``, the default), per location over the
:math:`C` classes, with :math:`q = \mathrm{softmax}(t/T)` and
:math:`p = \mathrm{softmax}(s/T)`:

.. math:: \ell = T^2\, \mathrm{KL}(q \,\|\, p) = T^2 \sum_c q_c (\log q_c - \log p_c),
          \qquad \frac{\partial \ell}{\partial s_c} = T\, (p_c - q_c)

PyTorch: ``KLDivLoss(reduction="batchmean")(log_softmax(s/T), softmax(t/T)) * T**2`` on
``(N, C)`` scores, which is ``normalization: "valid"`` (the default) here.

**Sigmoid form** (``activation="sigmoid"``, multi-label), per location, with
:math:`q_c = \sigma(t_c/T)` and :math:`p_c = \sigma(s_c/T)`: the binary cross-entropy of
:math:`p` against the soft targets :math:`q` minus the teacher's entropy (so that it is 0
where the two agree), that is the binary KL divergence summed over the classes:

.. math:: \ell = T^2 \sum_c \bigl[\mathrm{BCE}(q_c, p_c) - H(q_c)\bigr]
          = T^2 \sum_c \bigl[\mathrm{softplus}(s'_c) - \mathrm{softplus}(t'_c)
          - q_c (s'_c - t'_c)\bigr], \qquad
          \frac{\partial \ell}{\partial s_c} = T\, (p_c - q_c)

with :math:`s' = s/T`, :math:`t' = t/T` (softplus(x) = log(1 + e^x), finite for every
finite x). :math:`T^2` keeps the gradient's size from shrinking as :math:`1/T^2`, so
that a loss weight need not change with the temperature.

**Labels** (an optional third input) only mark what to skip: with the softmax form one
class index per location (as ``SoftmaxWithLoss``), and a location whose label is
``ignore_label`` is skipped; with the sigmoid form one label per score (as
``SigmoidCrossEntropyLoss``), and an element whose label is ``ignore_label`` leaves its
location's sum. They are checked as those layers' labels are; labels without an
``ignore_label`` are an error (they would do nothing).

The loss is one number per location in both forms. ``"valid"`` (default) counts the
locations counted (sigmoid: with at least one element not ignored), ``"full"`` every
location, ``"batch_size"`` outer_num, ``"none"`` 1.
"""
import math

import numpy as np

from .. import jit
from ..core import (Loss, binary_labels, label_shape_error, log_softmax, sparse_index, split_axis,
                    squeezed, times)
from ..jit import (PLANE_BLOCK, PLANE_CLASSES, ROW1, ROW2, ROW3, ROW4, _class_index, _exp_as, _log,
                   _log1p_as, _row_max, _skip_row)
from ..params import AXIS, IGNORE_LABEL, Layer, Param, normalization, number, one_of


def softmax_distillation_reference(s, t, temperature):
    """The softmax form in numpy on ``(outer, C[, inner])`` arrays: the loss per location
    and the gradient (before ignored locations and normalization)."""
    log_p = log_softmax(s / temperature)
    log_q = log_softmax(t / temperature)
    q = np.exp(log_q)
    loss = temperature ** 2 * (q * (log_q - log_p)).sum(axis=1, keepdims=True)
    return loss, temperature * (np.exp(log_p) - q)


def sigmoid_distillation_reference(s, t, temperature):
    """The sigmoid form in numpy: the loss per element (its sum over the classes is the
    location's) and the gradient (before ignored elements and normalization)."""
    s, t = s / temperature, t / temperature
    softplus_s, softplus_t = np.logaddexp(0, s), np.logaddexp(0, t)
    q = np.exp(t - softplus_t)                                    # sigma(t / T)
    loss = temperature ** 2 * (softplus_s - softplus_t - q * (s - t))
    return loss, temperature * (np.exp(s - softplus_s) - q)


def teacher_shape_error(teacher, student):
    """Why teacher scores of shape ``teacher`` do not fit student scores of shape
    ``student``, or None: the same shape, size-1 axes aside (a teacher whose global
    pooling leaves N x C x 1 x 1 for a student's N x C: the same values in the same order)."""
    if squeezed(teacher) == squeezed(student):
        return None
    return ("teacher scores have shape %s but the student scores have shape %s; give both "
            "nets' scores of one shape (size-1 axes aside)" % (tuple(teacher), tuple(student)))


class Distillation(Loss):
    """Distillation loss (see the module docstring): ``forward(student, teacher,
    labels=None)``; ``backward`` gives the gradient with respect to the student's scores."""

    def __init__(self, *, axis=1, temperature=4.0, activation="softmax", ignore_label=None,
                 normalization="valid"):
        Loss.__init__(self, axis, normalization)
        self.temperature = temperature
        self.activation = activation
        self.ignore_label = ignore_label
        self.checked = None  # the shapes of the last inputs with labels, checked
        self.kernel_args = jit.ignore_value(ignore_label), float(temperature)

    def __call__(self, student, teacher, labels=None):
        return Loss.__call__(self, student, teacher, labels)

    def forward(self, student, teacher, labels=None):
        if labels is not None:  # (without, Loss.forward checks the teacher: check_labels)
            shapes = (np.shape(student), np.shape(teacher), np.shape(labels))
            if shapes != self.checked:
                self.check_inputs(shapes)
                self.checked = shapes
        return Loss.forward(self, student, teacher, labels)

    def check_inputs(self, shapes):
        """Raise ValueError unless the shapes of (student, teacher[, labels]) fit."""
        student = shapes[0]
        split_axis(student, self.axis)  # (its error names the axis)
        error = teacher_shape_error(shapes[1], student)
        if error is None and len(shapes) > 2:
            if self.ignore_label is None:
                raise ValueError(
                    "labels are given but ignore_label is not set: the labels only mark what "
                    "to skip. Set ignore_label, or drop the labels (the loss on the labels is "
                    "the student's own loss layer)")
            error = label_shape_error(shapes[2], student, self.axis,
                                      self.activation == "softmax", "student scores")
        if error:
            raise ValueError(error)

    def check_labels(self, shape):
        """The teacher's shape (in the labels' place of :meth:`Loss.forward`, which calls
        this when a shape changes)."""
        self.check_inputs((self.shape, shape))
        self.labels_shape = shape

    def on_new_shape(self):
        ws, dtype = self.ws, self.dtype
        self.typed = self.work.get("typed", (4,), dtype)  # 1/T, then the kernels' scratch
        self.typed[0] = 1.0 / self.temperature
        self.rows = (ws[0] * ws[1], ws[2]) if len(ws) == 3 else ws
        if self.activation == "sigmoid":
            self.no_labels = np.zeros((0, 0), dtype)
            self.terms = self.work.get("terms", (5, self.rows[1]), dtype)
        elif len(ws) == 2:
            self.no_labels = np.zeros(0, dtype)
            self.q = self.work.get("q", (ws[1],), dtype)
        else:
            self.no_labels = np.zeros((0, 0), dtype)
            self.part = self.work.get("part", (5 * PLANE_BLOCK,), dtype)
            self.acc = self.work.get("acc", (3 * PLANE_BLOCK,), np.float64)
            self.q = self.work.get("q", (ws[1], PLANE_BLOCK), dtype)

    def counted(self, labels):
        """The mask of what counts (per location for the softmax form, per element for
        the sigmoid one; None: everything), the labels checked."""
        if labels is None:
            return None
        if self.activation == "softmax":
            return sparse_index(labels, self.ws, self.ignore_label)[1]
        return binary_labels(labels, self.ws, self.ignore_label)[1]

    def valid_count(self, mask):
        """The counted locations: those with anything counted."""
        if mask is None:
            return self.locations
        return np.count_nonzero(mask if self.activation == "softmax" else mask.any(axis=1))

    def reference(self, x, teacher, labels):
        t = np.asarray(teacher).reshape(self.ws)
        mask = self.counted(labels)
        terms = (softmax_distillation_reference if self.activation == "softmax"
                 else sigmoid_distillation_reference)
        loss, grad = terms(x, t, self.temperature)
        self.grad[...] = times(grad, mask)
        return times(loss, mask).sum(dtype=np.float64), self.locations, self.valid_count(mask)

    def kernel(self, x, teacher, labels):
        # (in the student's dtype: one compiled kernel per dtype, as for labels and weights)
        t = np.asarray(teacher, x.dtype).reshape(self.ws)
        labels = self.no_labels if labels is None else labels
        ignore, temperature = self.kernel_args
        if self.activation == "sigmoid":
            rows = self.rows
            y = labels if labels.size == 0 else labels.reshape(rows)
            out = self.run_kernel(_sigmoid_rows, x.reshape(rows), t.reshape(rows), y, ignore,
                                  self.typed, temperature, self.terms, self.grad.reshape(rows))
            if out is None:
                return None
            mask = None if labels.size == 0 else labels.reshape(self.ws) != self.ignore_label
            return out[0] * temperature ** 2, self.locations, self.valid_count(mask)
        if x.ndim == 2:
            out = self.run_kernel(_softmax_rows, x, t, labels.reshape(-1), ignore, self.typed,
                                  temperature, self.q, self.grad)
        else:
            y = labels if labels.size == 0 else labels.reshape(self.ws[0], -1)
            out = self.run_kernel(_softmax_planes, x, t, y, ignore, self.typed, temperature,
                                  self.part, self.acc, self.q, self.grad)
        return None if out is None else (out[0] * temperature ** 2, self.locations, out[1])


def distillation_loss(student, teacher, labels=None, **params):
    """Distillation loss (see the module docstring); returns ``(loss, grad)``, the gradient
    with respect to the student's scores. ``params``: the keyword arguments of
    :class:`Distillation`."""
    return Distillation(**params)(student, teacher, labels)


# -- the kernel family --------------------------------------------------------------
# Each kernel makes the gradient in forward, for backward to scale: it needs both blobs'
# softened probabilities, which forward has made. The exponentials are made in the
# scores' precision, each in a loop of its own (SIMD); the sums and the loss in float64.
# ``typed`` holds 1/T in the scores' dtype, so that the loops over scores run in it, and
# takes the gradient's factors of a row (converted to that dtype so).


@jit.inline
def _finite_row(t, n):
    finite = True
    for c in range(t.shape[1]):
        finite &= math.isfinite(t[n, c])
    return finite


@jit.kernel
def _softmax_rows(x, t, labels, ignore, typed, temperature, q, g):
    """The softmax form on (N, C) scores: status, KL sum (before T^2), counted rows; the
    gradient T (p - q) into g (0 on an ignored row). ``labels``: one per row, or none
    (empty; no ignore label is NaN, which equals no label); ``q``: a row's buffer."""
    rows, classes = x.shape
    inv_t = typed[0]
    has_labels = labels.size > 0
    total = valid = 0.0
    for n in range(rows):
        if has_labels:
            label = labels[n]
            if label == ignore:  # (a row that the reference computes too: checked)
                if not (_skip_row(x, n, g) & _finite_row(t, n)):
                    return jit.NOT_FINITE, 0.0, 0.0
                continue
            if _class_index(label, classes) < 0:
                return jit.BAD_LABEL, 0.0, 0.0
        ms, mt = _row_max(x, n), _row_max(t, n)
        # (indexing the 2-d arrays, not row views, whose loops numba 0.52 left off SIMD)
        for c in range(classes):
            g[n, c] = _exp_as((x[n, c] - ms) * inv_t)
        for c in range(classes):
            q[c] = _exp_as((t[n, c] - mt) * inv_t)
        zs = zt = dot = 0.0
        for c in range(classes):
            zs += g[n, c]
            zt += q[c]
            dot += q[c] * (np.float64(t[n, c]) - np.float64(x[n, c]))
        # KL(q || p) = sum_c q_c (t_c - s_c) / T - (max t - max s) / T + log(zs / zt): 0
        # where s = t (the same numbers on both sides; zs / zt, within [1/C, C], rather
        # than log zs - log zt, which the compiler may round apart)
        total += (dot / zt - (np.float64(mt) - np.float64(ms))) / temperature + _log(zs / zt)
        valid += 1.0
        typed[1] = temperature / zs
        typed[2] = zs / zt
        f, r = typed[1], typed[2]
        for c in range(classes):  # T (p - q) = T / zs (e_s - e_t zs / zt): 0 where s = t,
            g[n, c] = (g[n, c] - q[c] * r) * f  # also where the compiler fuses a product
    if not math.isfinite(total):
        return jit.NOT_FINITE, 0.0, 0.0
    return jit.OK, total, valid


@jit.kernel
def _softmax_planes(x, t, labels, ignore, typed, temperature, part, acc, q, g):
    """The softmax form on (outer, C, inner) scores, in blocks of locations along the
    contiguous inner axis: status, KL sum (before T^2), counted locations; the gradient
    into g. ``labels``: (outer, inner), or none (empty); ``part``: per location of a block
    its two maxima, and its partial sums, then the gradient's two factors (T / zs, zs /
    zt), in the scores' dtype; ``acc``: its two sums of exponentials and sum_c q_c (t_c -
    s_c), in float64 (each at its offset in one flat array, so that the compiler sees that
    they do not overlap); ``q``: the teacher's exponentials of a block."""
    outer, classes, inner = x.shape
    blk = q.shape[1]
    inv_t = typed[0]
    has_labels = labels.size > 0
    total = valid = 0.0
    bad_label = False
    for n in range(outer):
        for i0 in range(0, inner, blk):
            m = min(blk, inner - i0)
            mu = np.uint64(m)  # unsigned indices: no negative-index fix (SIMD)
            x0, t0 = x[n, 0, i0:i0 + m], t[n, 0, i0:i0 + m]
            for i in range(mu):  # the two maxima: part[i], part[ROW1 + i]
                part[i] = x0[i]
                part[ROW1 + i] = t0[i]
                acc[i] = acc[ROW1 + i] = acc[ROW2 + i] = 0.0
            for c in range(1, classes):
                xc, tc = x[n, c, i0:i0 + m], t[n, c, i0:i0 + m]
                for i in range(mu):
                    part[i] = xc[i] if xc[i] > part[i] else part[i]
                    part[ROW1 + i] = tc[i] if tc[i] > part[ROW1 + i] else part[ROW1 + i]
            # the sums of exponentials, into acc[i] and acc[ROW1 + i], and of q_c (t_c - s_c),
            # into acc[ROW2 + i]: over PLANE_CLASSES classes in the scores' dtype (part[ROW2
            # + i] to part[ROW4 + i]), then in float64
            for c0 in range(0, classes, PLANE_CLASSES):
                for i in range(mu):
                    part[ROW2 + i] = part[ROW3 + i] = part[ROW4 + i] = 0
                for c in range(c0, min(c0 + PLANE_CLASSES, classes)):
                    xc, tc = x[n, c, i0:i0 + m], t[n, c, i0:i0 + m]
                    gc, qc = g[n, c, i0:i0 + m], q[c]
                    for i in range(mu):
                        gc[i] = _exp_as((xc[i] - part[i]) * inv_t)
                    for i in range(mu):
                        qc[i] = _exp_as((tc[i] - part[ROW1 + i]) * inv_t)
                    for i in range(mu):
                        part[ROW2 + i] += gc[i]
                        part[ROW3 + i] += qc[i]
                        part[ROW4 + i] += qc[i] * (tc[i] - xc[i])
                for i in range(mu):
                    acc[i] += part[ROW2 + i]
                    acc[ROW1 + i] += part[ROW3 + i]
                    acc[ROW2 + i] += part[ROW4 + i]
            for i in range(mu):  # per location (as in _softmax_rows); an ignored one: weight 0
                w = 1.0
                if has_labels:
                    label = labels[n, i0 + i]
                    ignored = label == ignore
                    bad_label |= (_class_index(label, classes) < 0) & (not ignored)
                    w = 0.0 if ignored else 1.0
                zs, zt = acc[i], acc[ROW1 + i]
                total += w * ((acc[ROW2 + i] / zt - (np.float64(part[ROW1 + i])
                                                     - np.float64(part[i]))) / temperature
                              + _log(zs / zt))
                valid += w
                part[ROW2 + i] = w * temperature / zs  # the gradient's factors
                part[ROW3 + i] = zs / zt
            for c in range(classes):
                gc, qc = g[n, c, i0:i0 + m], q[c]
                for i in range(mu):  # (as in _softmax_rows)
                    gc[i] = (gc[i] - qc[i] * part[ROW3 + i]) * part[ROW2 + i]
        if bad_label:
            return jit.BAD_LABEL, 0.0, 0.0
    if not math.isfinite(total):
        return jit.NOT_FINITE, 0.0, 0.0
    return jit.OK, total, valid


@jit.kernel
def _sigmoid_rows(x, t, y, ignore, typed, temperature, terms, g):
    """The sigmoid form on (rows, cols) arrays ((N, C), or N * C rows of H * W): status,
    loss sum (before T^2); the gradient T (p - q) into g (0 where ignored). ``y``: labels
    of that shape, or none (empty); ``terms`` (5 x cols, the scores' dtype) takes a row's
    exp(-|s'|), log(1 + exp(-|s'|)), the same of t', made in loops of their own in the
    scores' precision (SIMD), and the weights (0 where ignored, else 1)."""
    rows, cols = x.shape
    inv_t, inv_t64 = typed[0], 1.0 / temperature
    has_labels = y.size > 0
    es, ls, et, lt, w = terms[0], terms[1], terms[2], terms[3], terms[4]
    for c in range(cols):
        w[c] = 1.0
    total = 0.0
    bad = False
    for n in range(rows):  # (2-d indexing, as in _softmax_rows)
        for c in range(cols):
            v = _exp_as(-abs(x[n, c] * inv_t))
            es[c] = v
            ls[c] = _log1p_as(v)
        for c in range(cols):
            v = _exp_as(-abs(t[n, c] * inv_t))
            et[c] = v
            lt[c] = _log1p_as(v)
        if has_labels:
            for c in range(cols):
                label = y[n, c]
                ignored = label == ignore
                bad |= (not ignored) & (not ((label >= 0) & (label <= 1)))
                w[c] = 0.0 if ignored else 1.0
        for c in range(cols):
            s, u = np.float64(x[n, c]) * inv_t64, np.float64(t[n, c]) * inv_t64
            e_s, e_t = np.float64(es[c]), np.float64(et[c])
            p = (1.0 if s >= 0 else e_s) / (1.0 + e_s)
            q = (1.0 if u >= 0 else e_t) / (1.0 + e_t)
            softplus_s = (s if s > 0 else 0.0) + np.float64(ls[c])
            softplus_t = (u if u > 0 else 0.0) + np.float64(lt[c])
            wc = np.float64(w[c])
            total += wc * (softplus_s - softplus_t - q * (s - u))
            g[n, c] = wc * temperature * (p - q)
    if bad:
        return jit.BAD_LABEL, 0.0
    if not math.isfinite(total):
        return jit.NOT_FINITE, 0.0
    return jit.OK, total


# -- the layer ------------------------------------------------------------------------

LAYERS = [
    Layer("DistillationLoss", Distillation, labels="scores", deploy=None, counted="location",
          bottoms=("student scores", "teacher scores", "labels"), params={
              "axis": AXIS,
              "temperature": Param(4.0, number(minimum=0, maximum=100, exclusive_minimum=True),
                                   "softening temperature T, in (0, 100]"),
              "activation": Param("softmax", one_of("softmax", "sigmoid"),
                                  "softmax (one class per location) or sigmoid (multi-label)"),
              "ignore_label": IGNORE_LABEL,
              "normalization": normalization("valid"),
          }),
]
