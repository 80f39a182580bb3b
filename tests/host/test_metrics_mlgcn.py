"""MultiLabelAccuracy's ML-GCN/ASL metrics (CP, CR, CF1, OP, OR, OF1) against plain loops
written from the definitions (sharing no code with caffe_losses.metrics), edge cases, and
the ``metrics`` key."""
import numpy as np
import pytest

from caffe_losses import metrics, table
from caffe_losses.params import ParamError

NAMES = ("cp", "cr", "cf1", "op", "or", "of1")


def loop_metrics(scores, labels, threshold=0.0, topk=None, ignore_label=None):
    """From the definitions, one entry at a time, in plain Python floats."""
    n, c = len(scores), len(scores[0])
    nc, np_, ng = [0] * c, [0] * c, [0] * c
    for i in range(n):
        kept = [j for j in range(c) if ignore_label is None or labels[i][j] != ignore_label]
        allowed = set(kept)
        if topk is not None:
            # the topk highest scores among the kept entries; ties: lower class index first
            ranked = sorted(kept, key=lambda j: (-float(scores[i][j]), j))
            allowed = set(ranked[:topk])
        for j in kept:
            predicted = j in allowed and float(scores[i][j]) > threshold
            labelled = labels[i][j] == 1
            np_[j] += predicted
            ng[j] += labelled
            nc[j] += predicted and labelled
    precisions = [nc[j] / max(np_[j], 1) for j in range(c) if np_[j] > 0 or ng[j] > 0]
    recalls = [nc[j] / ng[j] for j in range(c) if ng[j] > 0]
    cp = sum(precisions) / len(precisions) if precisions else 0.0
    cr = sum(recalls) / len(recalls) if recalls else 0.0
    op = sum(nc) / sum(np_) if sum(np_) else 0.0
    or_ = sum(nc) / sum(ng) if sum(ng) else 0.0

    def f1(p, r):
        return 2 * p * r / (p + r) if p + r else 0.0
    return {"cp": cp, "cr": cr, "cf1": f1(cp, cr), "op": op, "or": or_, "of1": f1(op, or_)}


def check(scores, labels, **kw):
    got = metrics.overall_scores(scores, labels, **kw)
    expected = loop_metrics(scores.tolist(), labels.tolist(), **kw)
    for name in NAMES:
        assert got[name] == pytest.approx(expected[name], abs=1e-12), name
    return got


def random_batch(seed, n=50, c=8, rate=0.3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, c)), (rng.random((n, c)) < rate).astype(np.float64)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("topk", [None, 1, 3, 8, 20])
@pytest.mark.parametrize("threshold", [0.0, -0.5, 0.7])
def test_matches_the_loops(seed, topk, threshold):
    scores, labels = random_batch(seed)
    check(scores, labels, threshold=threshold, topk=topk)


def test_ties_in_topk_take_the_lower_class_index():
    scores = np.round(random_batch(7)[0] * 2) / 2
    labels = random_batch(8)[1]
    check(scores, labels, topk=3)
    # a row of equal scores: the first three classes are the top 3
    got = metrics.class_counts(np.ones((1, 5)), np.ones((1, 5)), topk=3)
    assert got[1].tolist() == [1, 1, 1, 0, 0]


def test_ignored_entries_are_neither_labelled_nor_predicted_nor_in_the_topk():
    scores, labels = random_batch(9)
    ignored = np.random.default_rng(10).random(labels.shape) < 0.25
    check(scores, np.where(ignored, -1, labels), ignore_label=-1, topk=3)
    # the same as dropping those entries by hand: a high ignored score frees its topk place
    s = np.array([[9.0, 1.0, 2.0]])
    y = np.array([[-1, 1, 0]])
    nc, np_, ng = metrics.class_counts(s, y, topk=1, ignore_label=-1)
    assert (nc.tolist(), np_.tolist(), ng.tolist()) == ([0, 0, 0], [0, 0, 1], [0, 1, 0])


def test_no_prediction_at_all_is_zero_not_nan():
    scores, labels = random_batch(11)
    got = check(-np.abs(scores) - 1, labels)
    assert got == {"cp": 0.0, "cr": 0.0, "cf1": 0.0, "op": 0.0, "or": 0.0, "of1": 0.0}


def test_nothing_labelled_and_nothing_predicted_is_all_zero():
    got = check(-np.ones((4, 3)), np.zeros((4, 3)))
    assert set(got.values()) == {0.0}


def test_predictions_without_labels():
    # every class predicted, none labelled: precision 0 (each class is active), recall 0/0 = 0
    got = check(np.ones((4, 3)), np.zeros((4, 3)))
    assert got["cp"] == 0.0 and got["op"] == 0.0 and got["cr"] == 0.0


def test_a_class_without_labels_or_predictions_leaves_the_class_means():
    scores, labels = random_batch(12, c=5)
    wide_s = np.concatenate([scores, np.full((len(scores), 1), -5.0)], axis=1)
    wide_y = np.concatenate([labels, np.zeros((len(labels), 1))], axis=1)
    assert metrics.overall_scores(wide_s, wide_y) == pytest.approx(metrics.overall_scores(scores, labels))
    check(wide_s, wide_y)


def test_a_class_with_predictions_but_no_labels_counts_in_cp_not_in_cr():
    s = np.array([[1.0, 1.0], [1.0, -1.0]])
    y = np.array([[1.0, 0.0], [1.0, 0.0]])
    got = check(s, y)
    assert got["cp"] == pytest.approx((1.0 + 0.0) / 2)
    assert got["cr"] == pytest.approx(1.0)
    assert got["op"] == pytest.approx(2 / 3.0) and got["or"] == pytest.approx(1.0)


def test_a_class_with_labels_but_no_predictions_adds_zero_to_both_means():
    s = np.array([[1.0, -1.0], [1.0, -1.0]])
    y = np.array([[1.0, 1.0], [0.0, 1.0]])
    got = check(s, y)
    assert got["cp"] == pytest.approx((0.5 + 0.0) / 2)
    assert got["cr"] == pytest.approx((1.0 + 0.0) / 2)


def test_threshold_is_strict_and_on_the_score_scale():
    s = np.array([[0.0, 0.5, 2.0]])
    y = np.array([[1.0, 1.0, 1.0]])
    assert metrics.class_counts(s, y)[1].tolist() == [0, 1, 1]
    assert metrics.class_counts(s, y, threshold=0.5)[1].tolist() == [0, 0, 1]
    assert metrics.class_counts(s, y, threshold=-1)[1].tolist() == [1, 1, 1]


def test_topk_and_threshold_together():
    s = np.array([[3.0, 2.0, 1.0, -1.0], [-3.0, -2.0, -1.0, -0.5]])
    y = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    nc, np_, ng = metrics.class_counts(s, y, topk=3)
    assert np_.tolist() == [1, 1, 1, 0]  # the second row: top 3 all <= 0
    assert nc.tolist() == [1, 0, 1, 0]
    nc, np_, ng = metrics.class_counts(s, y, topk=3, threshold=-1.5)
    assert np_.tolist() == [1, 1, 2, 1]  # row 2: -1 and -0.5 pass the threshold, -2 and -3 do not
    nc, np_, ng = metrics.class_counts(s, y, topk=3, threshold=-3.5)
    assert np_.tolist() == [1, 2, 2, 1]  # row 2: -3 passes the threshold but is not in its top 3


# -- the layer's computation and its keys ----------------------------------------------

ROW = table.get("MultiLabelAccuracy")


def test_default_is_todays_four_tops():
    params = ROW.parse("")
    assert params["metrics"] == ["precision@k", "recall@k", "f1@k", "map"]
    assert params["threshold"] == 0.0 and params["topk"] is None
    metric = ROW.cls(**params)
    assert metric.TOPS == ("precision@k", "recall@k", "f1@k", "map")
    scores, labels = random_batch(13)
    p, r, f = metrics.topk_scores(scores, labels)
    assert metric(scores, labels) == (p, r, f, metrics.mean_average_precision(scores, labels))
    assert metric(scores, labels, 2) == (p, r)


def test_metrics_key_orders_the_tops():
    scores, labels = random_batch(14)
    params = ROW.parse("{'metrics': ['OF1', 'map', 'cp', 'recall@k'], 'topk': 3, 'threshold': -0.2}")
    metric = ROW.cls(**params)
    assert metric.TOPS == ("of1", "map", "cp", "recall@k")
    expected = loop_metrics(scores.tolist(), labels.tolist(), threshold=-0.2, topk=3)
    of1, m, cp, r = metric(scores, labels)
    assert of1 == pytest.approx(expected["of1"]) and cp == pytest.approx(expected["cp"])
    assert m == metrics.mean_average_precision(scores, labels)
    assert r == metrics.topk_scores(scores, labels)[1]


def test_spatial_blob_counts_every_location_as_a_sample():
    rng = np.random.default_rng(15)
    scores = rng.normal(size=(2, 5, 3, 4))
    labels = (rng.random((2, 5, 3, 4)) < 0.4).astype(np.float64)
    metric = ROW.cls(**ROW.parse("{'metrics': ['cp', 'cr', 'cf1', 'op', 'or', 'of1']}"))
    flat_s = np.moveaxis(scores, 1, -1).reshape(-1, 5)
    flat_y = np.moveaxis(labels, 1, -1).reshape(-1, 5)
    expected = loop_metrics(flat_s.tolist(), flat_y.tolist())
    assert metric(scores, labels) == pytest.approx(tuple(expected[n] for n in NAMES))


@pytest.mark.parametrize("value, message", [
    ("[]", "non-empty list"),
    ("'map'", "non-empty list"),
    ("['map', 'mAP']", "twice"),
    ("['accuracy']", "not a metric"),
    ("[1]", "not a metric"),
])
def test_bad_metrics_key_is_a_clear_error(value, message):
    with pytest.raises(ParamError, match="MultiLabelAccuracy: param_str key 'metrics' .*%s" % message):
        ROW.parse("{'metrics': %s}" % value)


def test_bad_topk_and_threshold_are_errors():
    with pytest.raises(ParamError, match="'topk' must be >= 1"):
        ROW.parse("{'topk': 0}")
    with pytest.raises(ParamError, match="'threshold' must be a finite number"):
        ROW.parse("{'threshold': 'high'}")
