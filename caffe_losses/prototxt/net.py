"""What a layer of a net is (a loss, a data layer), and whether Caffe builds it into the net
of a given state: Caffe's NetState (phase, level, stages) and its include/exclude rules."""
from .. import table

# the C++ cross-entropy losses, with the labels they take and what bottom[0] holds
CPP_CROSS_ENTROPY = {"SoftmaxWithLoss": ("sparse", "scores"),
                     "SigmoidCrossEntropyLoss": ("dense", "scores"),
                     "MultinomialLogisticLoss": ("sparse", "probabilities")}
CPP_LOSSES = set(CPP_CROSS_ENTROPY) | {"EuclideanLoss", "HingeLoss", "InfogainLoss", "ContrastiveLoss"}
DATA_LAYERS = {"Data", "ImageData", "HDF5Data", "WindowData", "MemoryData", "DummyData", "Input",
               "AnnotatedData"}
TRAIN, TEST = 0, 1  # caffe_pb2.Phase


def known_type(layer):
    """The type of a layer this tool knows: a C++ loss type, the class name of a caffe_losses
    Python layer (loss, metric or data), or None."""
    if layer.type == "Python":
        if layer.python_param.module == "caffe_losses":
            return layer.python_param.layer
        return None
    return layer.type if layer.type in CPP_LOSSES else None


def is_loss(layer):
    name = known_type(layer)
    return name is not None and not (name in table.BY_NAME and table.BY_NAME[name].kind != "loss")


def is_data_layer(layer):
    """A layer that reads data: Caffe's, a custom C++ one (HED's ImageLabelmapData) or a
    Python one (FCN's); none of them has bottoms."""
    return not layer.bottom and (layer.type in DATA_LAYERS or layer.type.endswith("Data")
                                 or layer.type == "Python")


def describe(layer):
    """``'name' (Type, top 't')``; an unnamed layer (Caffe names it "") is told by its top."""
    what = "%s, top %s" % (known_type(layer) or layer.type, ", ".join(repr(t) for t in layer.top) or "none")
    return "%s (%s)" % (repr(layer.name) if layer.name else "unnamed", what)


def without_fillers(layer):
    """Clear the fillers of ``layer``, whose weights come from a caffemodel (filling them
    would also draw from Caffe's random numbers, which the other layers' fillers share)."""
    for field, value in layer.ListFields():
        if field.name.endswith("_param") and field.message_type is not None:
            for inner, _ in value.ListFields():
                if inner.name.endswith("filler"):
                    value.ClearField(inner.name)


class NetState(object):
    """Caffe's NetState: the phase (TRAIN or TEST), the level and the set of stages that
    choose a net's layers, as ``caffe train -level N -stage S`` or
    ``caffe.Net(path, phase, level=N, stages=[S])`` set them."""

    def __init__(self, phase, level=0, stages=()):
        self.phase, self.level, self.stages = phase, level, frozenset(stages)

    def with_phase(self, phase):
        return NetState(phase, self.level, self.stages)

    def meets(self, rule):
        """Caffe's Net::StateMeetsRule: every condition the NetStateRule sets holds."""
        return ((not rule.HasField("phase") or rule.phase == self.phase)
                and (not rule.HasField("min_level") or self.level >= rule.min_level)
                and (not rule.HasField("max_level") or self.level <= rule.max_level)
                and all(stage in self.stages for stage in rule.stage)
                and not any(stage in self.stages for stage in rule.not_stage))

    def has(self, layer):
        """Whether Caffe builds ``layer`` into the net of this state (Net::FilterNet)."""
        if layer.include:
            return any(self.meets(rule) for rule in layer.include)
        return not any(self.meets(rule) for rule in layer.exclude)

    def options(self):
        """This state as ``caffe-losses`` options: ``--stage S --level N`` (empty for the default)."""
        return " ".join(["--stage %s" % s for s in sorted(self.stages)]
                        + (["--level %d" % self.level] if self.level else []))


def state_of(net, phase, stages=(), level=0):
    """The NetState of ``net`` in ``phase`` with ``stages`` and ``level``: the net file's own
    ``state { stage: ... }`` stages are added, as Caffe adds them."""
    return NetState(phase, level, tuple(net.state.stage) + tuple(stages))


def named_states(net, phase, stages=None, level=None):
    """The states a user would build ``net`` in: the one that ``stages``/``level`` give, or,
    if neither is given, the default one and one per stage and per level that the net's
    rules name (one stage at a time, as ``caffe train -stage S`` is mostly used)."""
    if stages or level is not None:
        return [state_of(net, phase, stages or (), level or 0)]
    rules = [rule for layer in net.layer for rule in list(layer.include) + list(layer.exclude)]
    named = sorted({s for rule in rules for s in list(rule.stage) + list(rule.not_stage)})
    levels = sorted(({rule.min_level for rule in rules if rule.HasField("min_level")}
                     | {rule.max_level for rule in rules if rule.HasField("max_level")}) - {0})
    return ([state_of(net, phase)] + [state_of(net, phase, [s]) for s in named]
            + [state_of(net, phase, (), n) for n in levels])


def share_a_net(layers, states):
    """Whether two of ``layers`` are in the net of one of ``states`` (a TRAIN and a TEST
    copy of a loss are not; nor are copies for two stages)."""
    for state in states:
        if sum(1 for layer in layers if state.has(layer)) > 1:
            return True
    return False


def unique(base, taken):
    """``base``, or ``base_2``, ``base_3``, ... if taken; added to ``taken``."""
    name, n = base, 1
    while name in taken:
        n += 1
        name = "%s_%d" % (base, n)
    taken.add(name)
    return name
