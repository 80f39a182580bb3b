"""Parity with PyTorch's losses, where PyTorch is installed (skipped cleanly where not).

`make test` installs PyTorch (CPU) into a host virtualenv when it can; see the Makefile.
"""
import numpy as np
import pytest

from caffe_losses.functional import (cross_entropy, distillation_loss, multilabel_softmax_loss,
                                     sigmoid_cross_entropy, sigmoid_focal_loss,
                                     softmax_cross_entropy, softmax_focal_loss)

torch = pytest.importorskip("torch")
F = torch.nn.functional


def t(a, grad=False):
    return torch.tensor(np.asarray(a, dtype=np.float64), requires_grad=grad)


def torch_value_and_grad(fn, scores):
    x = t(scores, grad=True)
    loss = fn(x)
    loss.backward()
    return loss.item(), x.grad.numpy()


def assert_parity(ours, theirs):
    assert ours[0] == pytest.approx(theirs[0], rel=1e-10)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-9, atol=1e-12)


@pytest.fixture
def rng():
    return np.random.default_rng(7)


@pytest.mark.parametrize("pos_weight", [None, [0.5, 2.0, 1.0, 4.0, 3.0]])
@pytest.mark.parametrize("class_weight", [None, [1.0, 0.0, 2.0, 0.5, 1.5]])
def test_bce_with_logits(rng, pos_weight, class_weight):
    scores = rng.normal(0, 3, size=(6, 5))
    labels = rng.random((6, 5))
    ours = sigmoid_cross_entropy(scores, labels, pos_weight=pos_weight, class_weight=class_weight,
                                 normalization="full")
    theirs = torch_value_and_grad(lambda x: F.binary_cross_entropy_with_logits(
        x, t(labels), weight=None if class_weight is None else t(class_weight),
        pos_weight=None if pos_weight is None else t(pos_weight), reduction="mean"), scores)
    assert_parity(ours, theirs)


def test_bce_with_logits_spatial_per_class_pos_weight(rng):
    # class axis 1 of N x C x H x W: PyTorch's pos_weight broadcasts over the last axis,
    # so give it the shape C x 1 x 1
    scores = rng.normal(0, 3, size=(2, 3, 2, 2))
    labels = (rng.random(scores.shape) < 0.5) * 1.0
    pw = [0.5, 2.0, 3.0]
    ours = sigmoid_cross_entropy(scores, labels, pos_weight=pw, normalization="none")
    theirs = torch_value_and_grad(lambda x: F.binary_cross_entropy_with_logits(
        x, t(labels), pos_weight=t(pw).reshape(3, 1, 1), reduction="sum"), scores)
    assert_parity(ours, theirs)


@pytest.mark.parametrize("class_weight", [None, [0.5, 2.0, 1.0, 3.0]])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.15])
@pytest.mark.parametrize("spatial", [False, True])
def test_cross_entropy_sparse(rng, class_weight, label_smoothing, spatial):
    shape = (4, 4, 3, 2) if spatial else (8, 4)
    scores = rng.normal(0, 2, size=shape)
    labels = rng.integers(0, 4, size=(shape[0],) + shape[2:])
    labels[rng.random(labels.shape) < 0.25] = 255
    ours = softmax_cross_entropy(scores, labels.astype(np.float64), ignore_label=255,
                                 class_weight=class_weight, label_smoothing=label_smoothing)
    theirs = torch_value_and_grad(lambda x: F.cross_entropy(
        x, torch.tensor(labels), weight=None if class_weight is None else t(class_weight),
        ignore_index=255, label_smoothing=label_smoothing, reduction="mean"), scores)
    assert_parity(ours, theirs)


def test_cross_entropy_with_probability_targets(rng):
    scores = rng.normal(0, 2, size=(5, 6))
    targets = rng.random((5, 6))
    targets /= targets.sum(axis=1, keepdims=True)
    ours = multilabel_softmax_loss(scores, targets)
    theirs = torch_value_and_grad(lambda x: F.cross_entropy(x, t(targets)), scores)
    assert_parity(ours, theirs)


def test_binary_cross_entropy_on_probabilities(rng):
    probs = rng.uniform(0.01, 0.99, size=(5, 4))
    labels = rng.random((5, 4))
    ours = cross_entropy(probs, labels, mode="binary", normalization="full")
    theirs = torch_value_and_grad(lambda x: F.binary_cross_entropy(x, t(labels)), probs)
    assert_parity(ours, theirs)


def test_nll_on_probabilities_for_one_hot_targets(rng):
    probs = rng.dirichlet(np.ones(5), size=6)
    classes = rng.integers(0, 5, size=6)
    ours = cross_entropy(probs, np.eye(5)[classes])
    theirs = torch_value_and_grad(lambda x: F.nll_loss(torch.log(x), torch.tensor(classes)), probs)
    assert_parity(ours, theirs)


@pytest.mark.parametrize("gamma,alpha", [(2.0, 0.25), (0.5, -1), (3.0, 0.7)])
def test_sigmoid_focal_matches_torchvision_formula(rng, gamma, alpha):
    # torchvision.ops.sigmoid_focal_loss, written out with torch ops (alpha < 0: off)
    scores = rng.normal(0, 3, size=(4, 6))
    labels = (rng.random((4, 6)) < 0.3) * 1.0

    def focal(x):
        y = t(labels)
        p = torch.sigmoid(x)
        ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
        p_t = p * y + (1 - p) * (1 - y)
        loss = ce * (1 - p_t) ** gamma
        if alpha >= 0:
            loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
        return loss.sum()

    ours = sigmoid_focal_loss(scores, labels, gamma=gamma, alpha=None if alpha < 0 else alpha,
                              normalization="none")
    assert_parity(ours, torch_value_and_grad(focal, scores))


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.0])
def test_softmax_focal_against_autograd(rng, gamma):
    scores = rng.normal(0, 2, size=(6, 5))
    labels = rng.integers(0, 5, size=6)
    alpha = [0.5, 1.0, 2.0, 0.25, 1.0]

    def focal(x):
        logp = F.log_softmax(x, dim=1)
        logp_y = logp[torch.arange(6), torch.tensor(labels)]
        a_y = t(alpha)[torch.tensor(labels)]
        return (-a_y * (1 - logp_y.exp()) ** gamma * logp_y).mean()

    ours = softmax_focal_loss(scores, labels.astype(np.float64), gamma=gamma, alpha=alpha)
    assert_parity(ours, torch_value_and_grad(focal, scores))


# -- distillation: PyTorch's usual recipes, times T^2 ------------------------------------

@pytest.mark.parametrize("temperature", [1.0, 4.0])
@pytest.mark.parametrize("reduction,normalization,shape", [
    ("batchmean", "valid", (6, 5)),          # PyTorch's batchmean divides by N:
    ("batchmean", "batch_size", (3, 5, 2, 2)),  # "valid" for N x C, "batch_size" beyond
    ("sum", "none", (3, 5, 2, 2)),
])
def test_distillation_is_kl_div_of_softened_distributions_times_t_squared(
        rng, temperature, reduction, normalization, shape):
    student, teacher = rng.normal(0, 3, size=shape), rng.normal(0, 3, size=shape)
    ours = distillation_loss(student, teacher, temperature=temperature,
                             normalization=normalization)
    theirs = torch_value_and_grad(lambda x: F.kl_div(
        F.log_softmax(x / temperature, dim=1), F.softmax(t(teacher) / temperature, dim=1),
        reduction=reduction) * temperature ** 2, student)
    assert_parity(ours, theirs)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_sigmoid_distillation_is_bce_with_soft_targets_minus_their_entropy(rng, temperature):
    # per location the sum over the classes: PyTorch's "sum" over N = 6 locations ("valid")
    student, teacher = rng.normal(0, 3, size=(6, 5)), rng.normal(0, 3, size=(6, 5))
    targets = torch.sigmoid(t(teacher) / temperature)
    entropy = F.binary_cross_entropy(targets, targets, reduction="sum")
    ours = distillation_loss(student, teacher, activation="sigmoid", temperature=temperature)
    theirs = torch_value_and_grad(lambda x: (F.binary_cross_entropy_with_logits(
        x / temperature, targets, reduction="sum") - entropy) * temperature ** 2 / 6, student)
    assert_parity(ours, theirs)
