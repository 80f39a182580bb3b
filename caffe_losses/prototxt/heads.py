"""The graph work of deploy: which layers of a net's TEST net run from given inputs, which
loss heads they feed, and which of them the chosen outputs need."""
from .. import table
from ..params import ParamError, parse_literal
from .io import PrototxtError
from .net import TRAIN, describe, is_data_layer, is_loss, known_type

# the probability layer that a deploy net gets in place of each loss: Caffe's losses
# here, ours from the table
ACTIVATION = {"SoftmaxWithLoss": "Softmax", "SigmoidCrossEntropyLoss": "Sigmoid"}
ACTIVATION.update({row.name: row.deploy for row in table.LOSSES if row.deploy})


class Head(object):
    """A loss's head: the blob a deploy net puts out for it (``score``, or the ``activation``
    of it) and the loss layers that read it. ``existing``: the top of a probability layer the
    TEST net already has for it (as BVLC's nets that feed Accuracy from a Softmax), if any."""

    def __init__(self, score, activation, axis):
        self.score, self.activation, self.axis = score, activation, axis
        self.losses = []
        self.existing = None

    def key(self):
        return self.score, self.activation, self.axis

    def label(self):
        return "%s (%s)" % (self.score, ", ".join(map(describe, self.losses)))


def loss_axis(layer):
    if layer.type == "Python":
        try:
            return parse_literal(layer.python_param.param_str).get("axis", 1)
        except ParamError as exc:
            raise PrototxtError("layer %s: param_str %s" % (describe(layer), exc)) from None
    return layer.softmax_param.axis if layer.HasField("softmax_param") else 1


def walk(net, available, state):
    """The net of ``state`` (a TEST state) computable from the blobs ``available``: its layers
    and the heads of the losses (of its TRAIN or TEST net) whose scores it computes, in order,
    as ("layer", l) and ("head", h) items; and the blobs it computes."""
    available, computed = set(available), set()
    items, heads = [], {}
    train = state.with_phase(TRAIN)
    for layer in net.layer:
        if is_data_layer(layer):
            continue
        if known_type(layer) is not None:  # a loss or a metric: never in a deploy net
            if is_loss(layer) and layer.bottom and layer.bottom[0] in computed and (
                    state.has(layer) or train.has(layer)):
                act = ACTIVATION.get(known_type(layer))
                head = Head(layer.bottom[0], act, loss_axis(layer) if act == "Softmax" else None)
                if head.key() not in heads:
                    heads[head.key()] = head
                    items.append(("head", head))
                heads[head.key()].losses.append(layer)
            continue
        if state.has(layer) and all(b in available for b in layer.bottom):
            items.append(("layer", layer))
            available.update(layer.top)
            computed.update(layer.top)
    for head in heads.values():
        head.existing = existing_activation(head, items)
    return items, computed


def existing_activation(head, items):
    """The top of a layer among ``items`` that already is ``head``'s probability layer, or None."""
    for what, layer in items:
        if (what == "layer" and layer.type == head.activation and list(layer.bottom) == [head.score]
                and layer.top[0] != head.score and (head.activation != "Softmax" or head.axis == (
                    layer.softmax_param.axis if layer.HasField("softmax_param") else 1))):
            return layer.top[0]
    return None


def heads_of(items):
    return [h for what, h in items if what == "head"]


def needed(items, heads, blobs):
    """The items that ``heads`` and the blobs ``blobs`` need, and the blobs read from outside them."""
    want, kept = set(blobs) | {h.existing for h in heads if h.existing}, []
    for what, item in reversed(items):
        if what == "head":
            if item in heads and not item.existing:
                kept.append((what, item))
                want.add(item.score)
        elif want.intersection(item.top):
            kept.append((what, item))
            want.difference_update(item.top)  # an earlier maker of the blob is needed only if read
            want.update(item.bottom)
    return kept[::-1], want


def select(items, computed, outputs):
    """The heads and plain blobs that ``outputs`` (score blobs, loss names or tops, blobs) name."""
    heads = heads_of(items)
    chosen, blobs = [], []
    for name in outputs:
        found = [h for h in heads if h.score == name] or \
                [h for h in heads if any(name in l.top for l in h.losses)]
        if not found:
            by_name = [(h, l) for h in heads for l in h.losses if l.name == name]
            if len({id(h) for h, _ in by_name}) > 1:
                raise PrototxtError("--outputs %s is ambiguous: it names %s; give the loss's top or "
                                    "score blob" % (name, ", ".join(describe(l) for _, l in by_name)))
            found = [h for h, _ in by_name[:1]]
        if found:
            chosen += [h for h in found if h not in chosen]
        elif name in computed:
            blobs.append(name)
        else:
            raise PrototxtError("--outputs %s: no head has that score blob, loss name or loss top, "
                                "and the TEST net makes no such blob; the heads: %s"
                                % (name, ", ".join(h.label() for h in heads) or "none"))
    return chosen, blobs
