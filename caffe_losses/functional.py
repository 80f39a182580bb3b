"""Cross-entropy losses as pure numpy functions: no Caffe import.

Every loss takes scores (and labels, optional weights) and returns
``(loss, grad)``: the scalar loss and its exact gradient with respect to the
scores, for a top diff (``loss_weight``) of 1.

Shapes follow Caffe: scores have the class axis ``axis`` (default 1), so a
blob of shape ``(N, C)`` or ``(N, C, H, W)`` has ``N * H * W`` *locations*,
each with ``C`` class scores. Internally every array is viewed as
``(outer, C, inner)``, with ``outer = prod(shape[:axis])`` and
``inner = prod(shape[axis + 1:])``, as Caffe's own softmax does.

Normalization (the divisor of the summed loss) uses Caffe's LossParameter
vocabulary:

============  ==============================================================
``full``      every location (element, for element-wise losses)
``valid``     the counted locations (with weights: the sum of their weights)
``batch_size``  N, the first dimension
``none``      1 (the plain sum)
============  ==============================================================

As in Caffe, the divisor is never below 1, so a batch with nothing to count
gives a loss of 0 and a zero gradient instead of NaN.
"""
import numpy as np

NORMALIZATIONS = ("full", "valid", "batch_size", "none")
TARGETS = ("sum", "count")


def split_axis(shape, axis):
    """Return ``(outer, C, inner)`` for a blob shape and its class axis."""
    ndim = len(shape)
    if not -ndim <= axis < ndim:
        raise ValueError("axis %d is out of range for a blob of shape %s" % (axis, tuple(shape)))
    axis %= ndim
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    return outer, int(shape[axis]), inner


def as_locations(array, axis):
    """View ``array`` as ``(outer, C, inner)`` without copying (when contiguous)."""
    return array.reshape(split_axis(array.shape, axis))


def location_weights(weights, shape, axis):
    """Broadcast a weights array to one weight per location, shape ``(outer, 1, inner)``.

    ``weights`` holds one value per sample (``N`` values, broadcast over the
    rest) or one per location (``N * H * W`` values, e.g. ``N x 1 x H x W``).
    Returns None when ``weights`` is None.
    """
    if weights is None:
        return None
    outer, _, inner = split_axis(shape, axis)
    w = np.asarray(weights).reshape(-1)
    if w.size == outer * inner:
        return w.reshape(outer, 1, inner)
    n = shape[0]
    if w.size == n and outer % n == 0:  # the class axis is not the batch axis
        return np.repeat(w, (outer * inner) // n).reshape(outer, 1, inner)
    raise ValueError(
        "weights have %d values; expected one per sample (%d) or one per location (%d)"
        % (w.size, n, outer * inner))


def normalizer(normalization, batch_size, full_count, valid_count):
    """The divisor of a summed loss, after Caffe's ``LossLayer::GetNormalizer``.

    ``valid_count`` may be a weighted count. Never below 1.
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


def check_nonnegative(name, array):
    """Raise ValueError unless every value of ``array`` is finite and >= 0."""
    lo, hi = array.min(), array.max()
    if lo >= 0 and np.isfinite(hi):
        return
    nonfinite = np.count_nonzero(~np.isfinite(array))
    if nonfinite:
        raise ValueError("%s contain %d NaN or Inf values; they must be finite"
                         % (name, nonfinite))
    raise ValueError("%s must be non-negative; %d values are negative (smallest %g)"
                     % (name, np.count_nonzero(array < 0), lo))


def log_softmax(scores, axis=1):
    """``log softmax(scores)`` over ``axis``, shifted by the max so it never overflows."""
    shifted = scores - scores.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


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
        labels: non-negative array of the same shape.
        weights: optional, one value per sample or per location.
        axis: the class axis.
        target: ``"sum"`` or ``"count"``.
        normalization: ``"batch_size"``, ``"valid"``, ``"full"`` or ``"none"``.

    Returns:
        ``(loss, grad)``: a Python float and an array shaped like ``scores``.
    """
    if target not in TARGETS:
        raise ValueError("unknown target %r; expected one of %s" % (target, ", ".join(TARGETS)))
    x = as_locations(scores, axis)
    y = as_locations(labels, axis)
    check_nonnegative("labels", y)
    w = location_weights(weights, scores.shape, axis)
    if w is not None:
        check_nonnegative("weights", w)

    logp = log_softmax(x, axis=1)
    if target == "sum":
        denom = y.sum(axis=1, keepdims=True)
    else:
        denom = (y != 0).sum(axis=1, keepdims=True).astype(x.dtype)
    valid = denom > 0
    # coef = w / denom on locations with a target, 0 elsewhere (no 0/0).
    coef = np.divide(1.0 if w is None else w, denom,
                     out=np.zeros(denom.shape, dtype=x.dtype), where=valid)

    per_location = -(y * logp).sum(axis=1, keepdims=True)
    total = np.sum(coef * per_location, dtype=np.float64)
    if w is None:
        valid_count = np.count_nonzero(valid)
    else:
        valid_count = np.sum(np.where(valid, w, 0), dtype=np.float64)
    z = normalizer(normalization, scores.shape[0], x.shape[0] * x.shape[2], valid_count)

    label_sum = y.sum(axis=1, keepdims=True)
    grad = coef * (label_sum * np.exp(logp) - y)
    grad /= z
    return float(total / z), grad.reshape(scores.shape).astype(scores.dtype, copy=False)
