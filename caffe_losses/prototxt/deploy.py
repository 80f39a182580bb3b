"""deploy: a net for inference derived from a training net. Data layers become Inputs, each
loss head gets its Softmax/Sigmoid, and what needs labels goes."""
from .heads import heads_of, needed, select, walk
from .io import PrototxtError, caffe_proto
from .net import TEST, describe, is_data_layer, named_states, state_of, unique, without_fillers
from .upgrade import current


def deploy(net, input_shape=None, input_name=None, outputs=None, stages=None, level=None, notes=None):
    """A deploy NetParameter made from ``net`` (left as it is) for the TEST net of ``stages``
    and ``level``: Input layers in place of data layers, a probability layer for each loss
    head, no labels or what needs them. ``outputs`` (names, or one comma-separated string:
    score blobs, loss names or tops, blobs) keeps those and what they need; ``input_name``
    chooses the inputs; ``input_shape``: dims, a list of dims, or ``(name, dims)`` pairs.
    ``notes``, a list, receives notes for the user. Raises PrototxtError."""
    net = current(net)
    inputs, items = plan(net, input_name, outputs, stages, level, notes)
    out = assemble(net.name, inputs, input_shapes(net, inputs, shape_list(input_shape)), items)
    check_inputs_read(out, inputs, bool(input_name))
    return out


def plan(net, input_name=None, outputs=None, stages=None, level=None, notes=None):
    """What the deploy net of ``net`` (current format) holds: its inputs, and its layers and
    heads as walk() items."""
    data_tops = [t for l in net.layer if is_data_layer(l) for t in l.top]
    data_tops = [t for i, t in enumerate(data_tops) if t not in data_tops[:i]]
    state = state_of(net, TEST, stages or (), level or 0)
    given = names(input_name) or []
    check_input_names(net, given, data_tops, state)
    # first as if every data top were an input, to learn which ones the heads need
    items, computed = walk(net, data_tops, state)
    if not stages and level is None:
        other_states(net, data_tops, heads_of(items), outputs, notes)
    heads, blobs = select(items, computed, names(outputs)) if outputs else (heads_of(items), [])
    inputs = given or chosen_inputs(net, items, heads, blobs, data_tops)
    items, computed = walk(net, inputs, state)
    if outputs:
        found = {h.key(): h for h in heads_of(items)}
        missing = [n for n in blobs if n not in computed] + [h.score for h in heads if h.key() not in found]
        if missing:
            raise PrototxtError("--outputs: %s needs blobs that are not inputs (%s)"
                                % (", ".join(missing), ", ".join(inputs)))
        items, _ = needed(items, [found[h.key()] for h in heads], blobs)
    return inputs, items


def check_input_names(net, given, data_tops, state):
    """PrototxtError for an --input-name that is no blob of the net, or that a layer computes."""
    blobs = {t for l in net.layer for t in l.top}
    for name in given:
        if name not in blobs:
            raise PrototxtError("--input-name %s: the net has no blob %s; the data-layer tops: %s"
                                % (name, name, ", ".join(data_tops) or "none"))
        makers = [l for l in net.layer if name in l.top and name not in l.bottom
                  and not is_data_layer(l) and state.has(l)]
        if makers:
            raise PrototxtError("--input-name %s: layer %s computes it; the inputs are blobs that "
                                "data layers make (%s)" % (name, describe(makers[0]), ", ".join(data_tops) or "none"))


def other_states(net, data_tops, heads, outputs, notes):
    """The heads that a stage (or level) the net's rules name would give beyond ``heads``, those
    of the default state, which is what Caffe builds: PrototxtError naming them if ``heads`` is
    empty (and no ``outputs`` are named), else a note."""
    have, found = {h.key() for h in heads}, []
    for state in named_states(net, TEST)[1:]:
        items, _ = walk(net, data_tops, state)
        more = [h.label() for h in heads_of(items) if h.key() not in have]
        if more:
            found.append("%s gives %s" % (state.options(), ", ".join(more)))
    if found and not heads and not outputs:
        raise PrototxtError("no loss head in the TEST net without a stage or level: %s; choose "
                            "with --stage/--level (as caffe train's -stage/-level)" % "; ".join(found))
    if found and notes is not None:
        notes.append("more heads in other net states: %s (the deploy net is the default state's)"
                     % "; ".join(found))


def chosen_inputs(net, items, heads, blobs, data_tops):
    """The data tops that the heads and blobs read, or (with neither) the first top of each
    data layer."""
    if heads or blobs:
        _, read = needed(items, heads, blobs)
        inputs = [t for t in data_tops if t in read]
    else:
        firsts = [l.top[0] for l in net.layer if is_data_layer(l) and l.top]
        inputs = [t for i, t in enumerate(firsts) if t not in firsts[:i]]
    if not inputs:
        raise PrototxtError("no data layer found; give --input-name")
    return inputs


def check_inputs_read(out, inputs, given):
    """PrototxtError for a deploy net without a layer besides its inputs, or with an input
    that nothing reads."""
    layers = [l for l in out.layer if l.type != "Input"]
    read = {b for l in layers for b in l.bottom}
    unread = [name for name in inputs if name not in read]
    if not layers:
        raise PrototxtError("the deploy net would have no layer besides its input(s) %s: nothing in "
                            "the TEST net computes from them" % ", ".join(inputs))
    if unread:
        raise PrototxtError("%s%s: no layer of the deploy net reads it (they read %s)"
                            % ("--input-name " if given else "input ", ", ".join(unread),
                               ", ".join(n for n in inputs if n in read)))


def known_shapes(net):
    """{blob: dims} from the net's Input, DummyData and MemoryData layers."""
    shapes = {}
    for layer in net.layer:
        if layer.type == "Input":
            given = [list(s.dim) for s in layer.input_param.shape]
        elif layer.type == "DummyData":
            given = dummy_shapes(layer.dummy_data_param, len(layer.top))
        elif layer.type == "MemoryData":
            p = layer.memory_data_param
            given = [[p.batch_size, p.channels, p.height, p.width]][:len(layer.top)]
        else:
            continue
        for i, top in enumerate(layer.top):
            if len(given) == 1 or i < len(given):
                shapes.setdefault(top, given[0 if len(given) == 1 else i])
    return shapes


def dummy_shapes(param, tops):
    """The shape of each top of a DummyData layer: its ``shape``s, or the legacy num,
    channels, height, width (one value for every top, or one per top)."""
    if param.shape:
        return [list(s.dim) for s in param.shape]
    legacy = [param.num, param.channels, param.height, param.width]
    if not all(legacy):
        return []
    return [[dims[0 if len(dims) == 1 else i] for dims in legacy] for i in range(tops)]


def input_shapes(net, inputs, given):
    """The dims of each input: ``given`` items ``(name or None, dims)`` by name, then in order,
    then the shapes the net states."""
    shapes, unnamed = {}, []
    for name, dims in given:
        if name is None:
            unnamed.append(dims)
        elif name not in inputs:
            raise PrototxtError("--input-shape %s=...: %s is not an input; the inputs: %s"
                                % (name, name, ", ".join(inputs)))
        else:
            shapes[name] = dims
    rest = [name for name in inputs if name not in shapes]
    if len(unnamed) > len(rest):
        raise PrototxtError("%d --input-shape for %d input(s) (%s)" % (len(given), len(inputs), ", ".join(inputs)))
    shapes.update(zip(rest, unnamed))
    stated = known_shapes(net)
    missing = [name for name in inputs if name not in shapes and name not in stated]
    if missing:
        raise PrototxtError("no shape for input(s) %s: give --input-shape [NAME=]N,C,H,W once per "
                            "input (the inputs, in order: %s)" % (", ".join(missing), ", ".join(inputs)))
    return [shapes.get(name) or stated[name] for name in inputs]


def assemble(name, inputs, shapes, items):
    """The deploy NetParameter: an Input per input, then the items (layers, without rules
    and fillers, and each head's probability layer)."""
    caffe_pb2, _ = caffe_proto()
    out = caffe_pb2.NetParameter()
    out.name = name
    for blob, dims in zip(inputs, shapes):
        inp = out.layer.add(name=blob, type="Input")
        inp.top.append(blob)
        inp.input_param.shape.add().dim.extend(dims)
    layers = [item for what, item in items if what == "layer"]
    taken = set(inputs) | {l.name for l in layers} | {t for l in layers for t in l.top}
    probs = [h for h in heads_of(items) if h.activation and not h.existing]
    for what, item in items:
        if what == "head":
            if item in probs:
                # "prob" for one head, else SCORE_prob; "_2", "_3", ... added to a name already taken
                top = unique("prob" if len(probs) == 1 and "prob" not in taken else item.score + "_prob", taken)
                act = out.layer.add(name=top, type=item.activation)
                act.bottom.append(item.score)
                act.top.append(top)
                if item.activation == "Softmax" and item.axis != 1:
                    act.softmax_param.axis = item.axis
            continue
        copy = out.layer.add()
        copy.CopyFrom(item)
        copy.ClearField("include")
        copy.ClearField("exclude")
        without_fillers(copy)
    return out


def names(text):
    """A list of names from a list or a comma-separated string (None stays None)."""
    if text is None:
        return None
    items = text if isinstance(text, (list, tuple)) else text.split(",")
    return [item.strip() for item in items if item.strip()]


def shape_list(input_shape):
    """``input_shape`` as ``[(name or None, dims)]``: from dims, or a list of dims or of such pairs."""
    if not input_shape:
        return []
    if all(isinstance(d, int) for d in input_shape):
        return [(None, list(input_shape))]
    return [item if isinstance(item, tuple) else (None, list(item)) for item in input_shape]
