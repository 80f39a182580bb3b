"""Multi-label metrics as pure numpy (no Caffe import), for the MultiLabelAccuracy layer.

Rows are samples (or locations), columns classes. Labels are 0/1; entries equal
to ``ignore_label`` are left out of every metric.

* precision@k, recall@k, F1@k: per sample, the top-k scored classes are the
  prediction; each metric is computed per sample and averaged over the samples
  that have a positive label (scikit-learn's ``average="samples"``). ``k=None``
  takes each sample's own number of positives (so precision = recall there).
* mean average precision: per class, the average precision of the ranking of
  the samples by score (scikit-learn's ``average_precision_score``: tied scores
  form one step), averaged over the classes with a positive in the batch.
"""
import numpy as np

from .params import AXIS, IGNORE_LABEL, Layer, Param, integer


def _rows(scores, labels, ignore_label):
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    mask = None if ignore_label is None else (y != ignore_label)
    if mask is not None:
        y = np.where(mask, y, 0.0)
        s = np.where(mask, s, -np.inf)  # never predicted, never ranked above anything
    return s, y, mask


def topk_scores(scores, labels, k=None, ignore_label=None):
    """``(precision@k, recall@k, f1@k)`` averaged over samples with a positive label."""
    s, y, _ = _rows(scores, labels, ignore_label)
    n, c = s.shape
    positives = y.sum(axis=1)
    kk = positives.astype(np.int64) if k is None else np.full(n, min(int(k), c), dtype=np.int64)
    order = np.argsort(-s, axis=1, kind="stable")
    rank = np.empty_like(order)
    rank[np.arange(n)[:, None], order] = np.arange(c)[None, :]
    predicted = rank < kk[:, None]
    hits = (predicted & (y > 0)).sum(axis=1)
    counted = positives > 0
    if not counted.any():
        return 0.0, 0.0, 0.0
    kk, hits, positives = kk[counted], hits[counted], positives[counted]
    precision = np.divide(hits, kk, out=np.zeros(hits.shape), where=kk > 0)
    recall = hits / positives
    f1 = np.divide(2 * precision * recall, precision + recall,
                   out=np.zeros(hits.shape), where=(precision + recall) > 0)
    return float(precision.mean()), float(recall.mean()), float(f1.mean())


def mean_average_precision(scores, labels, ignore_label=None):
    """Mean over the classes with a positive of the average precision of each class."""
    s, y, mask = _rows(scores, labels, ignore_label)
    n, c = s.shape
    order = np.argsort(-s, axis=0, kind="stable")
    s_sorted = np.take_along_axis(s, order, axis=0)
    y_sorted = np.take_along_axis(y, order, axis=0)
    counted = np.ones((n, c)) if mask is None else np.take_along_axis(mask, order, axis=0).astype(float)
    tp = np.cumsum(y_sorted, axis=0)
    seen = np.cumsum(counted, axis=0)
    # the last row of each group of tied scores ends a step of the precision-recall curve
    last = np.ones((n, c), dtype=bool)
    last[:-1] = s_sorted[:-1] != s_sorted[1:]
    # for every row, the index of the end of its tie group
    idx = np.where(last, np.arange(n)[:, None], n)
    end = np.minimum.accumulate(idx[::-1], axis=0)[::-1]
    precision_at_end = np.take_along_axis(tp / np.maximum(seen, 1), end, axis=0)
    npos = y.sum(axis=0)
    present = npos > 0
    if not present.any():
        return 0.0
    ap = (y_sorted * precision_at_end).sum(axis=0)[present] / npos[present]
    return float(ap.mean())


class MultiLabelMetrics(object):
    """The MultiLabelAccuracy layer's computation: precision@k, recall@k, F1@k and mAP of
    scores against 0/1 labels of the same shape (class axis ``axis``; an N x C x H x W
    blob counts every location as a sample)."""

    TOPS = ("precision", "recall", "f1", "map")

    def __init__(self, axis=1, k=None, ignore_label=None):
        self.axis = axis
        self.k = k
        self.ignore_label = ignore_label

    def __call__(self, scores, labels, count=4):
        """The first ``count`` metrics, in the order of ``TOPS``."""
        axis = self.axis % scores.ndim
        s = np.moveaxis(scores, axis, -1).reshape(-1, scores.shape[axis])
        y = np.moveaxis(labels, axis, -1).reshape(s.shape)
        values = topk_scores(s, y, self.k, self.ignore_label)
        if count > 3:
            values += (mean_average_precision(s, y, self.ignore_label),)
        return values[:count]


LAYERS = [
    Layer("MultiLabelAccuracy", MultiLabelMetrics, kind="metric", params={
        "axis": AXIS,
        "k": Param(None, integer(minimum=1, allow_none=True),
                   "predictions per sample; None: the sample's number of positives"),
        "ignore_label": IGNORE_LABEL,
    }),
]
