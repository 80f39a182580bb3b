"""Cross-entropy losses as pure numpy functions: no Caffe import.

Every loss takes scores (or probabilities), labels and optional weights and
returns ``(loss, grad)``: the scalar loss and its exact gradient with respect
to the first argument, for a top diff (``loss_weight``) of 1.

Shapes follow Caffe: scores have the class axis ``axis`` (default 1), so a
blob of shape ``(N, C)`` or ``(N, C, H, W)`` has ``N * H * W`` *locations*,
each with ``C`` class scores, and ``N * C * H * W`` *elements*. Internally
every array is viewed as ``(outer, C, inner)``, with
``outer = prod(shape[:axis])`` and ``inner = prod(shape[axis + 1:])``, as
Caffe's own softmax does.

Labels come in two kinds:

* dense: one label per score (multi-hot, soft or real-valued), for the
  multi-label softmax, the sigmoid losses and cross-entropy on probabilities;
* sparse: one integer class index per location (shape ``N`` or
  ``N x 1 x H x W``), for the single-label softmax losses, as Caffe's
  ``SoftmaxWithLoss``.

Weights (an optional array) hold one value per sample (``N``), per location
(``N * H * W``) or, for the element-wise losses, per element.

Normalization (the divisor of the summed loss) uses Caffe's LossParameter
vocabulary, see :func:`normalizer`. As in Caffe the divisor is never below 1,
so a batch with nothing to count gives a loss of 0 and a zero gradient, not
NaN.
"""
import numpy as np

NORMALIZATIONS = ("full", "valid", "batch_size", "none")
TARGETS = ("sum", "count")
MODES = ("categorical", "binary")


# -- shapes and weights -------------------------------------------------------

def split_axis(shape, axis):
    """Return ``(outer, C, inner)`` for a blob shape and its class axis."""
    ndim = len(shape)
    if not -ndim <= axis < ndim:
        raise ValueError("axis %d is out of range for a blob of shape %s" % (axis, tuple(shape)))
    axis %= ndim
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    return outer, int(shape[axis]), inner


def as_locations(array, axis, shape=None):
    """View ``array`` as ``(outer, C, inner)`` of ``shape`` (default: its own)."""
    return np.asarray(array).reshape(split_axis(array.shape if shape is None else shape, axis))


def broadcast_weights(weights, shape, axis, per_element=False):
    """Reshape a weights array so it broadcasts against ``(outer, C, inner)``.

    One value per sample (``N``), per location (``outer * inner``) or, when
    ``per_element``, per element. Returns None for None.
    """
    if weights is None:
        return None
    outer, c, inner = split_axis(shape, axis)
    w = np.asarray(weights).reshape(-1)
    n = shape[0]
    if w.size == outer * inner:
        return w.reshape(outer, 1, inner)
    if per_element and w.size == outer * c * inner:
        return w.reshape(outer, c, inner)
    if w.size == n and outer % n == 0:  # the class axis is not the batch axis
        return np.repeat(w, (outer * inner) // n).reshape(outer, 1, inner)
    expected = "one per sample (%d) or one per location (%d)" % (n, outer * inner)
    if per_element:
        expected += " or one per element (%d)" % (outer * c * inner)
    raise ValueError("weights have %d values; expected %s" % (w.size, expected))


def per_class(value, classes, name):
    """A scalar or one value per class, shaped ``(1, C, 1)``; None stays None."""
    if value is None:
        return None
    v = np.asarray(value, dtype=np.float64)
    if v.ndim == 0:
        return v.reshape(1, 1, 1)
    if v.size != classes:
        raise ValueError("%s has %d values but the scores have %d classes; give one number "
                         "or one per class" % (name, v.size, classes))
    return v.reshape(1, classes, 1)


def at_labels(per_class_value, index):
    """The per-class value at each location's class index (None stays None)."""
    if per_class_value is None:
        return None
    flat = per_class_value.reshape(-1)
    return np.full(index.shape, flat[0]) if flat.size == 1 else flat[index]


def normalizer(normalization, batch_size, full_count, valid_count):
    """The divisor of a summed loss, after Caffe's ``LossLayer::GetNormalizer``.

    ============== ===========================================================
    ``full``       every location (element, for element-wise losses)
    ``valid``      what counts: locations (elements) not ignored, with a
                   target; with weights, the sum of their weights
    ``batch_size`` N, the first dimension
    ``none``       1: the plain sum
    ============== ===========================================================

    Never below 1.
    """
    if normalization == "full":
        value = full_count
    elif normalization == "valid":
        value = valid_count
    elif normalization == "batch_size":
        value = batch_size
    elif normalization == "none":
        value = 1.0
    else:
        raise ValueError("unknown normalization %r; expected one of %s"
                         % (normalization, ", ".join(NORMALIZATIONS)))
    return max(1.0, float(value))


# -- input checks -------------------------------------------------------------

def check_finite(name, array):
    """Raise ValueError if ``array`` holds NaN or Inf, saying how many."""
    bad = array.size - np.count_nonzero(np.isfinite(array))
    if bad:
        raise ValueError("%s contain %d NaN or Inf values; they must be finite" % (name, bad))


def check_range(name, array, lo, hi=None, hint=""):
    """Raise ValueError unless every value is finite, >= lo and (if given) <= hi."""
    if array.size == 0:
        return
    amin, amax = array.min(), array.max()
    if amin >= lo and (amax <= hi if hi is not None else np.isfinite(amax)):
        return
    check_finite(name, array)
    if amin < lo:
        raise ValueError("%s must be >= %g; %d values are below (smallest %g)%s"
                         % (name, lo, np.count_nonzero(array < lo), amin, hint))
    raise ValueError("%s must be <= %g; %d values are above (largest %g)%s"
                     % (name, hi, np.count_nonzero(array > hi), amax, hint))


def check_nonnegative(name, array):
    check_range(name, array, 0)


def ignore_mask(labels, ignore_label):
    """Boolean mask of the labels that count (None when nothing is ignored)."""
    if ignore_label is None:
        return None
    return labels != ignore_label


def sparse_labels(labels, shape, axis, ignore_label):
    """Integer class indices ``(outer, 1, inner)`` and the mask of counted locations.

    Ignored locations get index 0 (and False in the mask). Raises ValueError
    for labels that are not integers in ``[0, C)``.
    """
    outer, c, inner = split_axis(shape, axis)
    lab = np.asarray(labels).reshape(outer, 1, inner)
    mask = ignore_mask(lab, ignore_label)
    counted = lab if mask is None else lab[mask]
    check_finite("labels", counted)
    if counted.size and (counted.min() < 0 or counted.max() >= c or
                         np.any(counted != np.floor(counted))):
        bad = counted[(counted < 0) | (counted >= c) | (counted != np.floor(counted))]
        ignore = "" if ignore_label is None else " or be the ignore_label %g" % ignore_label
        raise ValueError("labels must be integer class indices in [0, %d)%s; found %d other values "
                         "(first: %g)" % (c, ignore, bad.size, bad[0]))
    index = lab.astype(np.int64)
    if mask is not None:
        index[~mask] = 0
    return index, mask


def combine(*factors):
    """The product of the factors that are not None (None when all are)."""
    out = None
    for f in factors:
        if f is not None:
            out = f if out is None else out * f
    return out


# -- building blocks ----------------------------------------------------------

def log_softmax(scores, axis=1):
    """``log softmax(scores)`` over ``axis``, shifted by the max so it never overflows."""
    shifted = scores - scores.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def softplus(x):
    """``log(1 + exp(x))`` without overflow."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def softmax_against_targets(logp, q):
    r"""Loss and gradient of :math:`-\sum_c q_c \log p_c` for unnormalized targets ``q``.

    ``logp`` is a log-softmax over axis 1. The gradient with respect to the
    scores is :math:`(\sum_k q_k)\, p_c - q_c`. Returns ``(sum, grad)``.
    """
    total = -np.sum(q * logp, dtype=np.float64)
    grad = q.sum(axis=1, keepdims=True) * np.exp(logp) - q
    return total, grad


def finish(total, grad, z, like):
    """Divide by the normalizer and shape the gradient like the input."""
    grad = grad / z
    return float(total / z), grad.reshape(like.shape).astype(like.dtype, copy=False)


# -- softmax losses -----------------------------------------------------------

def multilabel_softmax_loss(scores, labels, weights=None, axis=1, target="sum",
                            normalization="batch_size"):
    r"""Softmax cross-entropy against multi-hot or real-valued labels.

    Per location, with non-negative labels :math:`y_c` over the ``C`` classes,
    the target distribution is

    * ``target="sum"`` (default): :math:`t_c = y_c / \sum_k y_k`
    * ``target="count"``: :math:`t_c = y_c / M`, :math:`M` the number of
      non-zero labels (the 1/M scaling of Mahajan et al., 2018)

    and the loss is :math:`\ell = -\sum_c t_c \log \mathrm{softmax}(s)_c`.
    A location with no positive label has no target: it contributes nothing
    and is not counted as valid. With location weights :math:`w`,

    .. math:: L = \frac{1}{Z} \sum_{\text{locations}} w \, \ell

    where :math:`Z` is the normalizer (``"batch_size"`` by default: the mean
    over the batch; ``"valid"`` counts the locations with a positive label, or
    sums their weights). The gradient is exact for any non-negative labels:

    .. math:: \frac{\partial L}{\partial s_c} = \frac{w}{Z}\,(T p_c - t_c),
              \qquad T = \sum_k t_k,\; p = \mathrm{softmax}(s)

    (``T`` is 1 for ``target="sum"`` but not, with real-valued labels, for
    ``"count"``).

    Args:
        scores: float array, ``(N, C)`` or ``(N, C, H, W)``; class axis ``axis``.
        labels: non-negative array with one label per score.
        weights: optional, one value per sample or per location.
        axis: the class axis.
        target: ``"sum"`` or ``"count"``.
        normalization: ``"batch_size"``, ``"valid"``, ``"full"`` or ``"none"``.

    Returns:
        ``(loss, grad)``: a Python float and an array shaped like ``scores``.
    """
    x = as_locations(scores, axis)
    q, valid_count = dense_targets(labels, weights, scores.shape, axis, target)
    total, grad = softmax_against_targets(log_softmax(x, axis=1), q)
    z = normalizer(normalization, scores.shape[0], x.shape[0] * x.shape[2], valid_count)
    return finish(total, grad, z, scores)


def dense_targets(labels, weights, shape, axis, target):
    """Per-location targets ``w * y / denom`` of the multi-label losses, and the valid count.

    ``denom`` is the label sum (``target="sum"``) or the number of non-zero
    labels (``"count"``); locations where it is 0 get no target and do not count.
    """
    if target not in TARGETS:
        raise ValueError("unknown target %r; expected one of %s" % (target, ", ".join(TARGETS)))
    y = as_locations(labels, axis, shape)
    check_nonnegative("labels", y)
    w = broadcast_weights(weights, shape, axis)
    if w is not None:
        check_nonnegative("weights", w)
    if target == "sum":
        denom = y.sum(axis=1, keepdims=True)
    else:
        denom = (y != 0).sum(axis=1, keepdims=True).astype(y.dtype)
    valid = denom > 0
    coef = np.divide(1.0 if w is None else w, denom,
                     out=np.zeros(denom.shape, dtype=np.result_type(y, np.float32)), where=valid)
    if w is None:
        count = np.count_nonzero(valid)
    else:
        count = np.sum(np.where(valid, w, 0), dtype=np.float64)
    return coef * y, count


def softmax_cross_entropy(scores, labels, weights=None, axis=1, ignore_label=None,
                          class_weight=None, label_smoothing=0.0, normalization="valid"):
    r"""Softmax cross-entropy with sparse integer labels (Caffe's ``SoftmaxWithLoss``).

    Per counted location with class index :math:`y`, class weights
    :math:`a_c` (default 1) and label smoothing :math:`\varepsilon`:

    .. math:: \ell = -(1-\varepsilon)\, a_y \log p_y
                     - \frac{\varepsilon}{C} \sum_c a_c \log p_c,
              \qquad p = \mathrm{softmax}(s)

    as PyTorch's ``CrossEntropyLoss(weight=a, label_smoothing=eps)``.
    ``"valid"`` normalization (the default, as ``SoftmaxWithLoss``) divides by
    the summed :math:`a_y` of the counted locations (times their weights), so
    with class weights it is PyTorch's weighted mean. Locations whose label is
    ``ignore_label`` contribute nothing.

    Args:
        scores: ``(N, C)`` or ``(N, C, H, W)``.
        labels: class indices, one per location (``N`` or ``N x 1 x H x W``).
        weights: optional, one value per sample or per location.
        ignore_label: a label value to skip, or None.
        class_weight: None, or C non-negative numbers.
        label_smoothing: :math:`\varepsilon` in [0, 1].
        normalization: ``"valid"``, ``"batch_size"``, ``"full"`` or ``"none"``.
    """
    x = as_locations(scores, axis)
    outer, c, inner = x.shape
    index, mask = sparse_labels(labels, scores.shape, axis, ignore_label)
    loc = location_factor(mask, weights, scores.shape, axis, dtype=x.dtype)
    a = per_class(class_weight, c, "class_weight")
    a_y = at_labels(a, index)

    # targets: (1 - eps) a_y on the label's class, plus eps / C * a_c on every class
    q = np.zeros(x.shape, dtype=x.dtype)
    np.put_along_axis(q, index, (1.0 - label_smoothing) * (1.0 if a_y is None else a_y), axis=1)
    if label_smoothing:
        q += (label_smoothing / c) * (1.0 if a is None else a)
    if loc is not None:
        q *= loc
    total, grad = softmax_against_targets(log_softmax(x, axis=1), q)
    counted = combine(loc, a_y)
    valid = outer * inner if counted is None else np.sum(counted, dtype=np.float64)
    z = normalizer(normalization, scores.shape[0], outer * inner, valid)
    return finish(total, grad, z, scores)


def location_factor(mask, weights, shape, axis, per_element=False, dtype=np.float32):
    """Weights times the mask of counted entries (as ``dtype``), or None when neither is given."""
    w = broadcast_weights(weights, shape, axis, per_element)
    if w is not None:
        check_nonnegative("weights", w)
    if mask is None:
        return None if w is None else w.astype(dtype, copy=False)
    return mask.astype(dtype) if w is None else np.where(mask, w, 0).astype(dtype)


def softmax_focal_loss(scores, labels, weights=None, axis=1, ignore_label=None, gamma=2.0,
                       alpha=None, normalization="valid"):
    r"""Multi-class focal loss on a softmax, with sparse integer labels.

    .. math:: \ell = -\alpha_y (1 - p_y)^\gamma \log p_y,
              \qquad p = \mathrm{softmax}(s)

    (Lin et al., 2017, applied to a softmax). ``alpha`` is None (off), one
    number, or one per class. With ``gamma=0`` and ``alpha=None`` this is
    :func:`softmax_cross_entropy`. The gradient is

    .. math:: \frac{\partial \ell}{\partial s_k} = \alpha_y \left[(1-p_y)^\gamma
              - \gamma\, p_y (1-p_y)^{\gamma-1} \log p_y\right] (p_k - [k = y]).

    ``"valid"`` (default) divides by the number of counted locations (or the
    sum of their weights); alpha does not enter the normalizer.
    """
    x = as_locations(scores, axis)
    outer, c, inner = x.shape
    index, mask = sparse_labels(labels, scores.shape, axis, ignore_label)
    loc = location_factor(mask, weights, scores.shape, axis, dtype=x.dtype)
    logp = log_softmax(x, axis=1)

    # Per-location quantities in float64: (1 - p_y)^(gamma - 1) must not overflow.
    logp_y = np.take_along_axis(logp, index, axis=1).astype(np.float64)
    p_y = np.exp(logp_y)
    rest = -np.expm1(logp_y)  # 1 - p_y, accurate when p_y is near 1
    modulation = rest ** gamma
    # d/dlogit factor; log(p_y) / (1 - p_y) tends to -1 as p_y -> 1
    ratio = np.divide(logp_y, rest, out=np.full(rest.shape, -1.0), where=rest > 0)
    factor = modulation * (1.0 - gamma * p_y * ratio)
    a = per_class(alpha, c, "alpha")
    scale = combine(at_labels(a, index), loc)
    per_location = -modulation * logp_y
    if scale is not None:
        per_location = per_location * scale
        factor = factor * scale
    grad = np.exp(logp)
    np.put_along_axis(grad, index, np.take_along_axis(grad, index, axis=1) - 1, axis=1)
    grad *= factor.astype(grad.dtype)
    valid = outer * inner if loc is None else np.sum(loc, dtype=np.float64)
    z = normalizer(normalization, scores.shape[0], outer * inner, valid)
    return finish(np.sum(per_location), grad, z, scores)


# -- sigmoid losses -----------------------------------------------------------

def binary_labels(labels, shape, axis, ignore_label):
    """Element-wise labels ``(outer, C, inner)`` in [0, 1] and the mask of counted ones."""
    y = as_locations(labels, axis, shape)
    mask = ignore_mask(y, ignore_label)
    counted = y if mask is None else y[mask]
    hint = "" if ignore_label is not None else "; set ignore_label to skip a label value"
    check_range("labels", counted, 0, 1, hint)
    if mask is not None:
        y = np.where(mask, y, 0).astype(y.dtype)
    return y, mask


def sigmoid_cross_entropy(scores, labels, weights=None, axis=1, ignore_label=None,
                          pos_weight=None, class_weight=None, normalization="batch_size"):
    r"""Binary cross-entropy with logits, element-wise (Caffe's ``SigmoidCrossEntropyLoss``).

    For each element with score :math:`x`, label :math:`y \in [0, 1]`:

    .. math:: \ell = a_c\left[-r_c\, y \log\sigma(x) - (1-y)\log(1-\sigma(x))\right]

    with positive weight :math:`r_c` (``pos_weight``) and class weight
    :math:`a_c` (``class_weight``), both one number or one per class
    (PyTorch's ``BCEWithLogitsLoss(weight=a, pos_weight=r)``). Computed as
    :math:`r y\,\mathrm{softplus}(-x) + (1-y)\,\mathrm{softplus}(x)`, finite for
    any finite :math:`x`. Gradient: :math:`a_c[\sigma(x)(r y + 1 - y) - r y]`.

    Elements whose label equals ``ignore_label`` are skipped. Normalization
    defaults to ``"batch_size"`` as in Caffe; ``"valid"`` counts the
    non-ignored elements (times their weights; class and positive weights do
    not enter it, as in PyTorch's mean); ``"full"`` counts every element.
    """
    return sigmoid_focal_loss(scores, labels, weights, axis=axis, ignore_label=ignore_label,
                              gamma=0.0, alpha=None, pos_weight=pos_weight,
                              class_weight=class_weight, normalization=normalization)


def sigmoid_focal_loss(scores, labels, weights=None, axis=1, ignore_label=None, gamma=2.0,
                       alpha=0.25, pos_weight=None, class_weight=None, normalization="batch_size"):
    r"""Sigmoid focal loss (Lin et al., 2017; torchvision's ``sigmoid_focal_loss``).

    Element-wise with :math:`p = \sigma(x)`, label :math:`y \in [0, 1]`:

    .. math:: \ell = \alpha_t (1 - p_t)^\gamma\, \mathrm{CE}(x, y),
              \quad p_t = p y + (1-p)(1-y),
              \quad \alpha_t = \alpha y + (1-\alpha)(1-y)

    with ``alpha=None`` meaning :math:`\alpha_t = 1`. With ``gamma=0`` and
    ``alpha=None`` this is exactly :func:`sigmoid_cross_entropy`.
    ``normalization="positive"`` divides by the number of positive labels
    (their sum, for soft labels; times the weights), at least 1, as RetinaNet
    does; the other modes are as for :func:`sigmoid_cross_entropy`.
    ``pos_weight`` and ``class_weight`` scale the positive term and every term
    of a class, as there.
    """
    x = as_locations(scores, axis)
    outer, c, inner = x.shape
    y, mask = binary_labels(labels, scores.shape, axis, ignore_label)
    loc = location_factor(mask, weights, scores.shape, axis, per_element=True, dtype=x.dtype)

    sp_pos = softplus(x)        # -log(1 - sigmoid(x))
    sp_neg = sp_pos - x         # -log sigmoid(x)
    sig = np.exp(-sp_neg)       # sigmoid(x)
    r = per_class(pos_weight, c, "pos_weight")
    if r is None:
        ce = y * sp_neg + (1 - y) * sp_pos
        dce = sig - y
    else:
        ry = r * y
        ce = ry * sp_neg + (1 - y) * sp_pos
        dce = sig * (ry + 1 - y) - ry

    if gamma:
        sig_neg = np.exp(-sp_pos)                     # 1 - sigmoid(x), accurate
        rest = y * sig_neg + (1 - y) * sig            # 1 - p_t
        modulation = rest ** gamma
        # d(1 - p_t)/dx = (1 - 2y) sigmoid(x) (1 - sigmoid(x)); divided by (1 - p_t)
        dlog_rest = np.divide((1 - 2 * y) * sig * sig_neg, rest,
                              out=np.zeros_like(rest), where=rest > 0)
        loss = modulation * ce
        grad = modulation * (dce + gamma * ce * dlog_rest)
    else:
        loss, grad = ce, dce

    a = per_class(class_weight, c, "class_weight")
    alpha_t = None if alpha is None else alpha * y + (1 - alpha) * (1 - y)
    scale = combine(alpha_t, a, loc)
    if scale is not None:
        loss = loss * scale
        grad = grad * scale
    total = np.sum(loss, dtype=np.float64)

    if normalization == "positive":
        positives = y if loc is None else y * loc
        z = max(1.0, float(np.sum(positives, dtype=np.float64)))
    else:
        valid = outer * c * inner if loc is None else np.sum(
            np.broadcast_to(loc, x.shape), dtype=np.float64)
        z = normalizer(normalization, scores.shape[0], outer * c * inner, valid)
    return finish(total, grad, z, scores)


# -- cross-entropy on probabilities -------------------------------------------

EPS = {"categorical": 1e-20, "binary": 1e-7}


def cross_entropy(probs, labels, weights=None, axis=1, mode="categorical", target="sum",
                  eps=None, ignore_label=None, normalization="batch_size"):
    r"""Cross-entropy on probabilities, for nets that end in a Softmax or Sigmoid layer.

    ``mode="categorical"``: per location, targets :math:`t` from non-negative
    labels as in :func:`multilabel_softmax_loss` (``target="sum"`` or
    ``"count"``; one-hot labels give :math:`t = y`),
    :math:`\ell = -\sum_c t_c \log \hat p_c`. Caffe's
    ``MultinomialLogisticLoss`` is the one-hot case.

    ``mode="binary"``: element-wise, labels in [0, 1] (``ignore_label``
    skips), :math:`\ell = -y \log \hat p - (1-y) \log(1-\hat p)`.

    :math:`\hat p = \max(p, \varepsilon)` (categorical) or
    :math:`\mathrm{clip}(p, \varepsilon, 1-\varepsilon)` (binary) keeps the loss
    finite. ``eps=None`` takes 1e-20 in categorical mode (the threshold of
    Caffe's ``MultinomialLogisticLoss``, so one-hot results match it) and
    1e-7 in binary mode (1 - eps must differ from 1 in float32). As in
    Caffe the gradient uses the clipped value, :math:`-t/\hat p` (binary:
    :math:`-y/\hat p + (1-y)/(1-\hat p)`), so a probability below
    :math:`\varepsilon` still gets a (bounded) push instead of none. The
    gradient is exact wherever the clip does not act.
    """
    if mode not in MODES:
        raise ValueError("unknown mode %r; expected one of %s" % (mode, ", ".join(MODES)))
    p = as_locations(probs, axis)
    check_range("probabilities", p, 0, 1,
                "; feed the output of a Softmax (categorical) or Sigmoid (binary) layer")
    outer, c, inner = p.shape
    eps = EPS[mode] if eps is None else eps
    if mode == "categorical":
        clipped = np.maximum(p, eps)
        t, valid = dense_targets(labels, weights, probs.shape, axis, target)
        total = -np.sum(t * np.log(clipped), dtype=np.float64)
        grad = -t / clipped
        z = normalizer(normalization, probs.shape[0], outer * inner, valid)
    else:
        clipped = np.clip(p, eps, 1 - eps)
        y, mask = binary_labels(labels, probs.shape, axis, ignore_label)
        loc = location_factor(mask, weights, probs.shape, axis, per_element=True, dtype=p.dtype)
        loss = -(y * np.log(clipped) + (1 - y) * np.log1p(-clipped))
        grad = (clipped - y) / (clipped * (1 - clipped))
        if loc is not None:
            loss = loss * loc
            grad = grad * loc
        total = np.sum(loss, dtype=np.float64)
        valid = outer * c * inner if loc is None else np.sum(
            np.broadcast_to(loc, p.shape), dtype=np.float64)
        z = normalizer(normalization, probs.shape[0], outer * c * inner, valid)
    return finish(total, grad, z, probs)
