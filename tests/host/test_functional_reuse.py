"""The plain functions keep their loss objects (plan and buffers) between calls with the
same parameters, shape and dtype: what they return must not show it. Each call's
gradient is a new array, equal to a new object's, on the kernel path and numpy's."""
import numpy as np
import pytest

from caffe_losses import core, table
from test_functional_params import FUNCTIONS
from test_input_edges import inputs

ROWS = {row.name: row for row in table.LOSSES}


@pytest.mark.parametrize("layer", sorted(FUNCTIONS))
def test_two_calls_return_gradients_that_do_not_alias_and_match_a_new_object(layer, path):
    row, function = ROWS[layer], FUNCTIONS[layer]
    rng = np.random.default_rng(3)
    first, second = inputs(row, (6, 4), rng), inputs(row, (6, 4), rng)
    loss1, grad1 = function(*first)
    kept = grad1.copy()
    loss2, grad2 = function(*second)
    assert not np.shares_memory(grad1, grad2)
    np.testing.assert_array_equal(grad1, kept)  # the second call left the first's alone
    fresh = row.cls()(*second)
    assert loss2 == fresh[0] and np.array_equal(grad2, fresh[1])
    assert loss1 != loss2


def test_a_failed_call_leaves_the_next_one_right():
    function, row = FUNCTIONS["SoftmaxCrossEntropyLoss"], ROWS["SoftmaxCrossEntropyLoss"]
    scores, labels = inputs(row, (6, 4), np.random.default_rng(4))
    expected = function(scores, labels)
    bad = labels.copy()
    bad[0] = 9
    with pytest.raises(ValueError, match=r"labels must be integer class indices in \[0, 4\)"):
        function(scores, bad)
    loss, grad = function(scores, labels)
    assert loss == expected[0] and np.array_equal(grad, expected[1])


def test_the_functions_keep_a_bounded_number_of_losses():
    function, row = FUNCTIONS["SigmoidCrossEntropyLoss"], ROWS["SigmoidCrossEntropyLoss"]
    rng = np.random.default_rng(5)
    for n in range(1, core.REUSED + 5):
        function(*inputs(row, (n, 3), rng))
    assert len(core._reused.losses) == core.REUSED
