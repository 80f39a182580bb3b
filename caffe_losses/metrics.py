"""Multi-label metrics as pure numpy (no Caffe import), for the MultiLabelAccuracy layer.

Rows are samples (or locations), columns classes. Labels are 0/1 (a label > 0 counts
as positive); entries equal to ``ignore_label`` are left out of every metric: they are
neither labelled nor predicted, and they take no place in a top-k.

* ``precision@k``, ``recall@k``, ``f1@k``: per sample, the top-k scored classes are the
  prediction; each metric is computed per sample and averaged over the samples
  that have a positive label (scikit-learn's ``average="samples"``). ``k=None``
  takes each sample's own number of positives (so precision = recall there).
* ``map``: mean average precision: per class, the average precision of the ranking of
  the samples by score (scikit-learn's ``average_precision_score``: tied scores
  form one step), averaged over the classes with a positive in the batch.
* ``cp``, ``cr``, ``cf1``, ``op``, ``or``, ``of1``: the per-class and overall
  precision, recall and F1 of ML-GCN and ASL (their ``AveragePrecisionMeter.overall``
  and ``overall_topk``). An entry is predicted when its score is > ``threshold`` (on
  the score scale: 0 for logits is probability 0.5) and, with ``topk``, it is also
  among its sample's ``topk`` highest scores (ties: the lower class index first),
  which gives CP-3 ... OF1-3 with ``topk=3``. Per class c: Nc correct predictions,
  Np predictions, Ng positive labels. Then

      CP  = mean over the *active* classes of Nc / max(Np, 1)
      CR  = mean over the classes with Ng > 0 of Nc / Ng
      CF1 = 2 CP CR / (CP + CR)
      OP  = sum Nc / sum Np,   OR = sum Nc / sum Ng,   OF1 = 2 OP OR / (OP + OR)

  A class is *active* when it has a label or a prediction (Ng > 0 or Np > 0): a class
  with neither, in this batch, leaves the class means instead of counting as 0 (or as
  0/0). So a class with labels but no prediction adds 0 to CP, and one with
  predictions but no label adds 0 to CP and is not in CR. Every 0/0 is 0: CP or CR
  with no class to average, CF1 and OF1 when precision + recall = 0, OP when nothing
  is predicted, OR when nothing is labelled.

  ML-GCN differs in three small ways: it predicts score >= 0 (here > threshold), it
  averages CP and CR over every class (a class without labels makes its CR NaN), and
  its OP divides by the sum of max(Np, 1). ASL's published repository keeps only mAP.
"""
import numpy as np

from .inputs import ignore_mask
from .params import AXIS, IGNORE_LABEL, Layer, Param, integer, number


def _rows(scores, labels, ignore_label):
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    mask = ignore_mask(y, ignore_label)
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


def class_counts(scores, labels, threshold=0.0, topk=None, ignore_label=None):
    """Per class ``(Nc, Np, Ng)``: correct predictions, predictions, positive labels.

    An entry is predicted when its score is > ``threshold`` and, with ``topk``, it is
    among the ``topk`` highest scores of its row (ties: the lower class index first).
    """
    s, y, _ = _rows(scores, labels, ignore_label)
    predicted = s > threshold  # an ignored entry has score -inf: never predicted
    if topk is not None and topk < s.shape[1]:
        order = np.argsort(-s, axis=1, kind="stable")
        top = np.zeros(s.shape, dtype=bool)
        np.put_along_axis(top, order[:, :topk], True, axis=1)
        predicted &= top
    positive = y > 0
    return ((predicted & positive).sum(axis=0).astype(np.float64),
            predicted.sum(axis=0).astype(np.float64), positive.sum(axis=0).astype(np.float64))


def _ratio(a, b):
    return float(a) / float(b) if b > 0 else 0.0


def _f1(p, r):
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def overall_scores(scores, labels, threshold=0.0, topk=None, ignore_label=None):
    """``{"cp", "cr", "cf1", "op", "or", "of1"}``: ML-GCN's per-class and overall
    precision, recall and F1 (see the module docstring for the conventions)."""
    nc, np_, ng = class_counts(scores, labels, threshold, topk, ignore_label)
    active = (np_ > 0) | (ng > 0)
    labelled = ng > 0
    cp = float((nc[active] / np.maximum(np_[active], 1)).mean()) if active.any() else 0.0
    cr = float((nc[labelled] / ng[labelled]).mean()) if labelled.any() else 0.0
    op, or_ = _ratio(nc.sum(), np_.sum()), _ratio(nc.sum(), ng.sum())
    return {"cp": cp, "cr": cr, "cf1": _f1(cp, cr), "op": op, "or": or_, "of1": _f1(op, or_)}


METRICS = ("precision@k", "recall@k", "f1@k", "map", "cp", "cr", "cf1", "op", "or", "of1")
DEFAULT_METRICS = METRICS[:4]
# the names of the metrics in the training script's curves.json and printed lines
KEYS = {"precision@k": "precision", "recall@k": "recall", "f1@k": "f1"}
LABELS = {"precision@k": "precision@k", "recall@k": "recall@k", "f1@k": "F1@k", "map": "mAP",
          "cp": "CP", "cr": "CR", "cf1": "CF1", "op": "OP", "or": "OR", "of1": "OF1"}


def metric_names(value):
    """The ``metrics`` key: a non-empty list of distinct names from ``METRICS`` (any case),
    returned as a list in the order given (a list, as ``param_str`` and NetSpec write it)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
        raise ValueError("must be a non-empty list of metric names from %s, such as "
                         "['map', 'of1'], got %r" % (", ".join(METRICS), value))
    names = []
    for name in value:
        key = name.lower() if isinstance(name, str) else name
        if key not in METRICS:
            raise ValueError("has %r, which is not a metric; the metrics are %s"
                             % (name, ", ".join(METRICS)))
        if key in names:
            raise ValueError("names %r twice; give each metric once (one top each)" % key)
        names.append(key)
    return names


def compute(scores, labels, metrics=DEFAULT_METRICS, k=None, topk=None, threshold=0.0,
            ignore_label=None):
    """The values of ``metrics`` (names from ``METRICS``), in that order, for ``(N, C)``
    scores and labels; only the groups asked for are computed."""
    values = {}
    if any(m in metrics for m in METRICS[:3]):
        values.update(zip(METRICS[:3], topk_scores(scores, labels, k, ignore_label)))
    if "map" in metrics:
        values["map"] = mean_average_precision(scores, labels, ignore_label)
    if any(m in metrics for m in METRICS[4:]):
        values.update(overall_scores(scores, labels, threshold, topk, ignore_label))
    return tuple(values[m] for m in metrics)


class MultiLabelMetrics(object):
    """The MultiLabelAccuracy layer's computation: the ``metrics`` (by default
    precision@k, recall@k, F1@k and mAP) of scores against 0/1 labels of the same shape
    (class axis ``axis``; an N x C x H x W blob counts every location as a sample).

    ``TOPS`` (on an instance: its ``metrics``) names the tops in order; the layer takes
    1 to ``len(metrics)`` tops and fills the first ones. ``k`` is the k of
    precision@k, recall@k and F1@k; ``threshold`` and ``topk`` define the prediction of
    CP ... OF1 (see the module docstring).
    """

    TOPS = DEFAULT_METRICS

    def __init__(self, axis=1, k=None, ignore_label=None, metrics=DEFAULT_METRICS,
                 threshold=0.0, topk=None):
        self.axis = axis
        self.k = k
        self.ignore_label = ignore_label
        self.metrics = self.TOPS = tuple(metric_names(metrics))
        self.threshold = threshold
        self.topk = topk

    def __call__(self, scores, labels, count=None):
        """The first ``count`` metrics (all by default), in the order of ``metrics``."""
        axis = self.axis % scores.ndim
        s = np.moveaxis(scores, axis, -1).reshape(-1, scores.shape[axis])
        y = np.moveaxis(labels, axis, -1).reshape(s.shape)
        names = self.metrics if count is None else self.metrics[:count]
        return compute(s, y, names, self.k, self.topk, self.threshold, self.ignore_label)


LAYERS = [
    Layer("MultiLabelAccuracy", MultiLabelMetrics, kind="metric", params={
        "axis": AXIS,
        "k": Param(None, integer(minimum=1, allow_none=True),
                   "predictions per sample; None: the sample's number of positives"),
        "ignore_label": IGNORE_LABEL,
        "metrics": Param(list(DEFAULT_METRICS), metric_names,
                         "the tops, in order: names from %s" % ", ".join(METRICS)),
        "threshold": Param(0.0, number(),
                           "CP ... OF1: a score > threshold is a prediction (score scale)"),
        "topk": Param(None, integer(minimum=1, allow_none=True),
                      "CP ... OF1: predictions only among each sample's topk highest scores"),
    }),
]
