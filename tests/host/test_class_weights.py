"""caffe_losses.class_weights: the math of the effective number and of pos_weight, against
the formulas written out per class, and the error on a class without positives. (The
command on a real .h5 runs in the image: tests/in_caffe/test_class_weights_cli.py.)"""
import numpy as np
import pytest

from caffe_losses import class_weights
from caffe_losses.class_weights import LabelError, effective_number_weights, pos_weights


@pytest.mark.parametrize("beta", [0.9, 0.99, 0.999, 0.9999])
def test_effective_number_follows_cui_et_al(beta):
    counts = [5, 40, 300, 2000, 1]
    raw = [(1 - beta) / (1 - beta ** n) for n in counts]
    expected = [w * len(counts) / sum(raw) for w in raw]
    got = effective_number_weights(counts, beta)
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    assert got.sum() == pytest.approx(len(counts))
    assert list(np.argsort(got)) == list(np.argsort(counts)[::-1])  # rarer class, larger weight


def test_beta_zero_is_equal_weights_and_beta_near_one_is_inverse_frequency():
    counts = np.array([3, 30, 300])
    np.testing.assert_allclose(effective_number_weights(counts, 0.0), [1, 1, 1])
    inverse = (1.0 / counts) * 3 / (1.0 / counts).sum()
    np.testing.assert_allclose(effective_number_weights(counts, 1 - 1e-9), inverse, rtol=1e-5)


def test_pos_weight_is_negatives_over_positives():
    np.testing.assert_allclose(pos_weights([10, 25, 100], 100), [9.0, 3.0, 0.0])


@pytest.mark.parametrize("compute", [lambda n: effective_number_weights(n, 0.99),
                                     lambda n: pos_weights(n, 50)])
def test_a_class_without_positives_is_an_error_naming_it(compute):
    with pytest.raises(LabelError, match="class 2 has no positive sample"):
        compute([4, 7, 0, 9])
    with pytest.raises(LabelError, match="classes 0, 3 have no positive sample"):
        compute([0, 7, 1, 0])


@pytest.mark.parametrize("beta", [-0.1, 1.0, 1.5])
def test_beta_outside_zero_one_is_rejected(beta):
    with pytest.raises(ValueError, match=r"beta must be in \[0, 1\)"):
        effective_number_weights([1, 2], beta)


def test_pasted_line_format():
    assert class_weights.number_list([1.0, 0.123456789, 12345678.0]) == "[1, 0.123457, 1.23457e+07]"


def test_missing_file_is_a_clear_error(tmp_path, capsys):
    pytest.importorskip("h5py")
    assert class_weights.main([str(tmp_path / "nope.h5")]) == 2
    assert "nope.h5: no such file" in capsys.readouterr().err


def test_without_h5py_the_command_says_so(monkeypatch, capsys, tmp_path):
    import sys
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py raises ImportError
    assert class_weights.main([str(tmp_path / "x.h5")]) == 2
    assert "needs h5py" in capsys.readouterr().err
