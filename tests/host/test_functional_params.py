"""The plain functions and classes (caffe_losses.functional) check their keyword
arguments as the layers check their param_str: what a layer refuses, they refuse, with
the layer's message; what it takes, they take, numpy numbers and arrays included."""
import json

import numpy as np
import pytest

from caffe_losses import functional as F
from caffe_losses import table
from caffe_losses.params import ParamError

# each layer's function (every loss row must have one)
FUNCTIONS = {
    "AsymmetricLoss": F.asymmetric_loss,
    "CrossEntropyLoss": F.cross_entropy,
    "DistillationLoss": F.distillation_loss,
    "MultiLabelSoftmaxLoss": F.multilabel_softmax_loss,
    "SigmoidCrossEntropyLoss": F.sigmoid_cross_entropy,
    "SigmoidFocalLoss": F.sigmoid_focal_loss,
    "SoftmaxCrossEntropyLoss": F.softmax_cross_entropy,
    "SoftmaxFocalLoss": F.softmax_focal_loss,
    "ZLPRLoss": F.zlpr_loss,
}
# values some key of some layer refuses (a value that a layer's key takes is checked to be
# taken by its function too)
BAD = {
    "axis": [1.5, "1", None],
    "gamma": [-1, "two", float("inf")],
    "alpha": [1.5, -1, "x", [0.2, -0.1, 0.3]],
    "pos_weight": [-1, [1, -2, 1], []],
    "class_weight": [-1, [1, "x", 1], []],
    "label_smoothing": [1.5, -0.1],
    "ignore_label": [1.5, "255", True],
    "normalization": ["positve", "VALID", "mean", None],
    "poly_eps": ["x", float("nan")],
    "target": ["summ", 1],
    "mode": ["bin", None],
    "eps": [0, 0.5, -1],
    "gamma_pos": [-1],
    "gamma_neg": [-0.5],
    "clip": [1.5, -0.1],
    "focal_grad": ["yes", 1],
    "temperature": [0, -1, 101, "4", None],
    "activation": ["softmx", "Softmax", None],
}
# keys that no layer has, as typed by mistake
UNKNOWN = ["gama", "normalisation", "loss_weight", "ignore"]


def inputs(row):
    scores = np.array([[0.2, -1.0, 0.5], [1.5, 0.3, -0.2]])
    if row.inputs == "probabilities":
        scores = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    labels = np.array([0, 2]) if row.labels == "sparse" else np.array([[1, 0, 0], [0, 1, 1]])
    return scores, labels


def layer_message(row, params):
    """The ParamError message of the layer's param_str for ``params``, or None if it takes them."""
    try:
        row.parse(json.dumps(params))  # (JSON: NaN and Infinity are literals there)
    except ParamError as exc:
        return str(exc)
    return None


def test_every_loss_has_a_function():
    assert sorted(FUNCTIONS) == sorted(row.name for row in table.LOSSES)


@pytest.mark.parametrize("layer", sorted(FUNCTIONS))
def test_functions_and_classes_refuse_what_the_layer_refuses_with_its_message(layer):
    row = table.BY_NAME[layer]
    scores, labels = inputs(row)
    cases = [{key: value} for key in row.params for value in BAD[key]]
    cases += [{key: 1} for key in UNKNOWN]
    cases += [{"mode": "categorical", "ignore_label": -1}] if "mode" in row.params else []
    refused = 0
    for params in cases:
        expected = layer_message(row, params)
        if expected is None:  # the layer takes it: so do the function and the class
            FUNCTIONS[layer](scores, labels, **params)
            row.cls(**params)
            continue
        refused += 1
        for call in (lambda: FUNCTIONS[layer](scores, labels, **params), lambda: row.cls(**params)):
            with pytest.raises(ParamError) as info:
                call()
            assert str(info.value) == expected, params
    assert refused >= len(row.params) + len(UNKNOWN)


def test_the_messages_name_the_layer_and_the_nearest_key_or_value():
    scores, labels = inputs(table.BY_NAME["SigmoidFocalLoss"])
    with pytest.raises(ParamError, match=r"^SigmoidFocalLoss: unknown param_str key 'gama'\. Did you "
                                         r"mean 'gamma'\? Accepted keys: alpha, axis, "):
        F.sigmoid_focal_loss(scores, labels, gama=1)
    with pytest.raises(ParamError, match=r"^SigmoidFocalLoss: param_str key 'normalization' must be "
                                         r"one of 'full', 'valid', 'batch_size', 'none', 'positive', "
                                         r"got 'positve' \(did you mean 'positive'\?\)\.$"):
        F.sigmoid_focal_loss(scores, labels, normalization="positve")
    with pytest.raises(ParamError, match=r"^SigmoidFocalLoss: param_str key 'alpha' must be <= 1, "
                                         r"got 1\.5\.$"):
        F.SigmoidFocal(alpha=1.5)


def test_positional_parameters_are_refused():
    with pytest.raises(TypeError):
        F.SoftmaxFocal(1, None, 2.0)


def test_numpy_numbers_and_arrays_are_taken_as_python_ones():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(4, 3)).astype(np.float32)
    dense = (rng.random((4, 3)) < 0.5).astype(np.float32)
    sparse = np.array([0, 2, 255, 1], np.float32)
    cases = [
        (F.sigmoid_focal_loss, dense, dict(gamma=np.float32(1.5), alpha=np.float64(0.5),
                                           pos_weight=np.array([1.0, 2.0, 3.0]),
                                           class_weight=np.array([2], np.int64)[0])),
        (F.softmax_cross_entropy, sparse, dict(ignore_label=np.int64(255),
                                               class_weight=np.arange(1, 4, dtype=np.float32),
                                               label_smoothing=np.float32(0.25), axis=np.int32(1))),
    ]
    for function, labels, params in cases:
        as_python = {key: np.asarray(value).tolist() for key, value in params.items()}
        assert all(not isinstance(v, np.generic) for v in as_python.values())
        loss, grad = function(scores, labels, **params)
        expected_loss, expected_grad = function(scores, labels, **as_python)
        assert loss == expected_loss and np.array_equal(grad, expected_grad)
