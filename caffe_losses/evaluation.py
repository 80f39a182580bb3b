"""The tests of ``python3 -m caffe_losses.train``: which metrics of which blobs, over the
whole test set."""
import numpy as np

from . import metrics


class Tests(object):
    """What a test measures: the blobs ``score_blob`` and ``label_blob`` of the test net and
    the metrics ``names`` (with ``topk`` and ``threshold``). Each is the option given, else that
    of the test net's first MultiLabelAccuracy layer (its bottoms and its ``metrics``, ``topk``
    and ``threshold`` keys), else the default."""

    def __init__(self, args, net=None):
        name, metric = accuracy_layer(net)
        bottoms = list(net.bottom_names[name]) if metric is not None else ["score", "label"]
        self.score_blob = args.score_blob or bottoms[0]
        self.label_blob = args.label_blob or bottoms[1]
        self.names = tuple(args.metrics or (metric.metrics if metric else metrics.DEFAULT_METRICS))
        self.topk = args.topk if args.topk is not None else (metric.topk if metric else None)
        self.threshold = args.threshold if args.threshold is not None else (
            metric.threshold if metric else 0.0)

    def run(self, net, iterations, stop=None):
        """The metrics over ``iterations`` batches of ``net`` (see :func:`evaluate`)."""
        return evaluate(net, iterations, self.score_blob, self.label_blob, self.names, self.topk,
                        self.threshold, stop)


def accuracy_layer(net):
    """``(name, metrics)`` of the first MultiLabelAccuracy layer of ``net``, or (None, None)."""
    for name, layer in zip(net._layer_names, net.layers) if net is not None else ():
        if isinstance(getattr(layer, "metric", None), metrics.MultiLabelMetrics):
            return name, layer.metric
    return None, None


def evaluate(net, iterations, score_blob, label_blob, names=metrics.DEFAULT_METRICS, topk=None,
             threshold=0.0, stop=None):
    """Metrics over ``iterations`` test batches, on the gathered scores (not averaged per batch):
    ``{key: value}``, keys as :data:`caffe_losses.metrics.KEYS` (``precision@k`` is
    ``precision``, ...; the others their own name). None if ``stop()`` turns true between two
    batches."""
    scores, labels = [], []
    for _ in range(iterations):
        if stop is not None and stop():
            return None
        net.forward()
        score = net.blobs[score_blob].data
        scores.append(score.reshape(score.shape[0], -1).copy())
        labels.append(net.blobs[label_blob].data.reshape(scores[-1].shape).copy())
    s, y = np.concatenate(scores), np.concatenate(labels)
    values = metrics.compute(s, y, names, topk=topk, threshold=threshold)
    return {metrics.KEYS.get(name, name): value for name, value in zip(names, values)}
