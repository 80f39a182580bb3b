"""param_str parsing: safe, strict, and clear — including on random input."""
import pytest
from hypothesis import given, settings, strategies as st

from caffe_losses.params import Param, ParamError, integer, number, one_of, parse_params, per_class_numbers

SPEC = {
    "axis": Param(1, integer()),
    "normalization": Param("valid", one_of("full", "valid", "batch_size", "none")),
    "gamma": Param(2.0, number(minimum=0)),
    "alpha": Param(0.25, number(minimum=0, maximum=1, allow_none=True)),
    "ignore_label": Param(None, integer(allow_none=True)),
    "class_weight": Param(None, per_class_numbers()),
}


def test_empty_param_str_gives_the_defaults():
    assert parse_params("L", "", SPEC) == {k: p.default for k, p in SPEC.items()}


def test_json_and_python_literals_give_the_same_result():
    a = parse_params("L", '{"gamma": 1, "alpha": null, "class_weight": [1, 2]}', SPEC)
    b = parse_params("L", "{'gamma': 1, 'alpha': None, 'class_weight': (1, 2)}", SPEC)
    assert a == b and a["gamma"] == 1.0 and a["alpha"] is None and a["class_weight"] == (1.0, 2.0)


@pytest.mark.parametrize("text,message", [
    ("{'gama': 1}", "L: unknown param_str key 'gama'. Did you mean 'gamma'? Accepted keys: alpha, axis,"),
    ("{'axis': True}", "L: param_str key 'axis' must be an integer, got True."),
    ("{'gamma': 'two'}", "key 'gamma' must be a finite number, got 'two'"),
    ("{'gamma': float('nan')}", "is not a dict literal"),
    ('{"gamma": NaN}', "key 'gamma' must be a finite number, got nan"),
    ("{'alpha': 2}", "key 'alpha' must be <= 1, got 2"),
    ("{'class_weight': []}", "key 'class_weight' must not be an empty list"),
    ("{'class_weight': [1, 'x']}", "key 'class_weight' must be a number or a list of numbers, one per class; an item"),
    ("{'normalization': 'VALID'}", "must be one of 'full', 'valid', 'batch_size', 'none', got 'VALID'"),
    ("__import__('os').system('echo owned')", "is not a dict literal"),
    ("{'a': 1}.keys()", "is not a dict literal"),
    ("7", "must be a dict literal such as"),
])
def test_bad_param_str_raises_a_clear_param_error(text, message):
    with pytest.raises(ParamError) as info:
        parse_params("L", text, SPEC)
    assert message in str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_random_text_parses_or_raises_param_error_only(text):
    try:
        params = parse_params("L", text, SPEC)
    except ParamError:
        return
    assert set(params) == set(SPEC)


values = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True)
                      | st.text(max_size=5), lambda inner: st.lists(inner, max_size=3), max_leaves=5)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(SPEC) + ["gama", "x"]), values, max_size=4))
def test_random_dicts_parse_or_raise_param_error_only(given_params):
    try:
        params = parse_params("L", repr(given_params), SPEC)
    except ParamError:
        return
    assert set(params) == set(SPEC)
    assert params["normalization"] in ("full", "valid", "batch_size", "none")
    assert params["alpha"] is None or 0 <= params["alpha"] <= 1
