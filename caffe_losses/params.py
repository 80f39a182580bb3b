"""Parsing and validation of a layer's ``param_str``: the one place for it.

A ``param_str`` is a dict literal, in JSON or Python literal syntax::

    param_str: "{'normalization': 'valid', 'target': 'count'}"
    param_str: '{"normalization": "valid", "axis": 1}'

It is read with :func:`json.loads` or :func:`ast.literal_eval`, never
``eval`` or YAML. Every key is checked against the layer's declared
parameters; an unknown key, a wrong type or a bad value raises
:class:`ParamError` naming the layer, the key and what is accepted.
"""
import ast
import difflib
import json
import math

import numpy as np


class ParamError(ValueError):
    """A ``param_str`` that cannot be used as written."""


class Param(object):
    """One declared parameter: its default and a check that returns the value to use.

    ``check(value)`` returns the (possibly converted) value or raises
    ``ValueError`` with a sentence saying what is accepted.
    """

    def __init__(self, default, check, doc="", required=False):
        self.default = default
        self.check = check
        self.doc = doc
        self.required = required  # a key that param_str must give (no default)


def one_of(*choices):
    def check(value):
        if value not in choices:
            words = [c for c in choices if isinstance(c, str)]
            near = difflib.get_close_matches(value, words, n=1) if isinstance(value, str) else []
            raise ValueError("must be one of %s, got %r%s" % (
                ", ".join(repr(c) for c in choices), value,
                " (did you mean %r?)" % near[0] if near else ""))
        return value
    return check


def boolean():
    def check(value):
        if not isinstance(value, bool):
            raise ValueError("must be true or false, got %r" % (value,))
        return value
    return check


def string(allow_empty=True):
    def check(value):
        if not isinstance(value, str) or not (value or allow_empty):
            raise ValueError("must be a%s string, got %r" % ("" if allow_empty else " non-empty", value))
        return value
    return check


def integer(minimum=None, allow_none=False):
    def check(value):
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer%s, got %r" % (" or None" if allow_none else "", value))
        if minimum is not None and value < minimum:
            raise ValueError("must be >= %d, got %r" % (minimum, value))
        return value
    return check


def number(minimum=None, maximum=None, allow_none=False, exclusive_minimum=False):
    def check(value):
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError("must be a finite number%s, got %r" % (" or None" if allow_none else "", value))
        if minimum is not None and (value <= minimum if exclusive_minimum else value < minimum):
            raise ValueError("must be %s %g, got %r" % (">" if exclusive_minimum else ">=", minimum, value))
        if maximum is not None and value > maximum:
            raise ValueError("must be <= %g, got %r" % (maximum, value))
        return float(value)
    return check


def per_class_numbers(allow_none=True, minimum=0.0):
    """One number, or a list with one number per class (its length is checked against the blob)."""
    one = number(minimum=minimum)

    def check(value):
        if value is None and allow_none:
            return None
        if isinstance(value, (list, tuple)):
            if not value:
                raise ValueError("must not be an empty list")
            try:
                return tuple(one(v) for v in value)
            except ValueError as exc:
                raise ValueError("must be a number or a list of numbers, one per class; an item %s"
                                 % exc)
        try:
            return one(value)
        except ValueError as exc:
            raise ValueError("must be a number or a list of numbers, one per class; %s" % exc)
    return check


def plain(value):
    """``value`` with numpy scalars and arrays as the Python numbers and lists they hold
    (item by item in lists and tuples), so that the checks and ``repr`` take them."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


def nearest(word, words):
    """`` Did you mean 'x'?`` for the word of ``words`` nearest ``word``, or ``""``."""
    near = difflib.get_close_matches(str(word), list(words), n=1)
    return " Did you mean %r?" % near[0] if near else ""


def parse_literal(text):
    """Read a dict literal from ``text`` (JSON or Python syntax). Empty text is ``{}``."""
    text = (text or "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError) as exc:
            raise ParamError("is not a dict literal (JSON or Python syntax): %s" % exc)
    if not isinstance(value, dict):
        raise ParamError("must be a dict literal such as \"{'normalization': 'valid'}\", got %s"
                         % type(value).__name__)
    return value


def parse_params(layer, param_str, spec):
    """Parse ``param_str`` for ``layer`` (a class name) against ``spec`` ({key: Param}).

    Returns a dict with every declared key, defaults filled in.
    """
    try:
        given = parse_literal(param_str)
    except ParamError as exc:
        raise ParamError("%s: param_str %r %s" % (layer, param_str, exc))
    return check_params(layer, given, spec)


def check_params(layer, given, spec, also=()):
    """Check the values of ``given`` ({key: value}, numpy values taken as Python ones)
    for ``layer`` against ``spec``; ``also``: more names to suggest for an unknown key
    (a NetSpec helper's own keywords). Returns a dict with every declared key, defaults
    filled in; raises ParamError naming the layer, the key and what it accepts."""
    params = {}
    for key, value in given.items():
        if key not in spec:
            raise ParamError("%s: unknown param_str key %r.%s Accepted keys: %s."
                             % (layer, key, nearest(key, list(spec) + list(also)),
                                ", ".join(sorted(spec))))
        try:
            params[key] = spec[key].check(plain(value))
        except ValueError as exc:
            raise ParamError("%s: param_str key %r %s." % (layer, key, exc))
    for key, param in spec.items():
        if key not in params and param.required:
            raise ParamError("%s: param_str has no key %r, which it needs: %s." % (layer, key, param.doc))
        params.setdefault(key, param.default)
    return params


# -- the parameters several layers share, and a layer's row in the table -------------

AXIS = Param(1, integer(), "class axis of the scores")
IGNORE_LABEL = Param(None, integer(allow_none=True), "label value to skip, or None")
GAMMA = Param(2.0, number(minimum=0), "focusing exponent")
NORMALIZATIONS = ("full", "valid", "batch_size", "none")


def normalization(default, extra=()):
    """The ``normalization`` key: Caffe's LossParameter vocabulary (and ``extra`` modes)."""
    return Param(default, one_of(*(NORMALIZATIONS + tuple(extra))),
                 "divisor of the summed loss, as Caffe's LossParameter")


def per_class_param(doc, default=None):
    """A key holding one number or one per class (checked against the scores' classes)."""
    param = Param(default, per_class_numbers(), doc)
    param.per_class = True
    return param


class Layer(object):
    """One row of the table of layers (:mod:`caffe_losses.table`): everything the
    Caffe adapters, the NetSpec helpers, the prototxt tool, the tests and the
    benchmarks need to know of a layer.

    * ``name``: the ``python_param { layer: ... }`` name.
    * ``cls``: the loss class (its ``__init__`` takes exactly the ``params``), for a
      metric the class whose ``forward`` computes the tops, for a data layer the class
      that makes its batches.
    * ``params``: ``{key: Param}``, the ``param_str`` keys.
    * ``labels``: what bottom[1] holds: ``"dense"`` (one label per score), ``"sparse"``
      (one class index per location) or ``"scores"``: a second blob of scores, of
      bottom[0]'s shape (a teacher's, for distillation). Then the optional bottom[2]
      holds labels rather than weights, of a kind the loss's parameters may choose, and
      the loss class checks the bottoms' shapes itself (``check_inputs(shapes)``, the
      check of its ``forward``).
    * ``deploy``: the Caffe layer (``"Softmax"``, ``"Sigmoid"``) that ``caffe-losses
      deploy`` puts in the loss's place, or None for none (bottom[0] already holds
      probabilities, or a distillation loss reads a student's scores, whose own loss head
      gives the deploy net its probability layer).
    * ``inputs``: what bottom[0] holds, ``"scores"`` or ``"probabilities"``.
    * ``bottoms``: the names of the three bottoms in messages; by default ``(inputs,
      "labels", "weights")``.
    * ``counted``: what ``normalization: "valid"`` counts, ``"location"`` or
      ``"element"`` (for messages).
    * ``per_element_weights``: whether the weights bottom may hold one value per score.
    * ``check``: an optional ``check(params)`` for rules across keys; raises ValueError.
    * ``kind``: ``"loss"``, ``"metric"`` or ``"data"`` (a layer without bottoms whose
      ``cls`` makes the batches of its tops, ``cls.TOPS``).

    A loss class's row is also its ``ROW``: it checks its arguments against the row
    (:class:`caffe_losses.core.Loss`), and its labels and messages follow it.
    """

    def __init__(self, name, cls, params, labels="dense", deploy=None, inputs="scores",
                 counted="location", per_element_weights=False, check=None, kind="loss",
                 bottoms=None):
        self.name = name
        self.cls = cls
        self.params = params
        self.labels = labels
        self.deploy = deploy
        self.inputs = inputs
        self.bottoms = tuple(bottoms or (inputs, "labels", "weights"))
        self.counted = counted
        self.per_element_weights = per_element_weights
        self.check = check
        self.kind = kind
        if kind == "loss":
            cls.ROW = self

    @property
    def per_class(self):
        """The keys that hold one value per class."""
        return tuple(k for k, p in self.params.items() if getattr(p, "per_class", False))

    def parse(self, param_str):
        """The parameters of a ``param_str``, checked; raises ParamError."""
        return self.check_across(parse_params(self.name, param_str, self.params))

    def validate(self, given, also=()):
        """``given`` ({key: value}, e.g. keyword arguments) checked as a ``param_str`` is,
        with the same messages; numpy values are taken as the Python numbers and lists
        they hold. ``also``: as :func:`check_params`. Returns every key, defaults filled
        in; raises ParamError."""
        return self.check_across(check_params(self.name, given, self.params, also))

    def check_across(self, params):
        """``params`` after the row's rule across keys (``check``), if any."""
        if self.check is not None:
            try:
                self.check(params)
            except ValueError as exc:
                raise ParamError("%s: %s" % (self.name, exc))
        return params

    def __repr__(self):
        return "Layer(%r)" % self.name
