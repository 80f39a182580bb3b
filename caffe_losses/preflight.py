"""What ``python3 -m caffe_losses.train`` checks before its first iteration.

A mistake that Caffe meets only at the first test, at a snapshot or when it restores a
file ends a run late, or aborts the process with a C++ stack dump. :class:`Plan` checks
the options and files before any net is built, :func:`check_nets` the nets Caffe built
before they train. A failure is a :class:`PreflightError` (one line; nothing has been
written); a doubt is a warning in ``Plan.warnings``.
"""
import os
import tempfile

from . import snapshots
from .data.listfile import read_lines
from .prototxt import NetState, PrototxtError, caffe_proto, current, known_type, read_prototxt
from .table import BY_NAME

# Caffe 1.0's solvers, and its learning rate policies (SGDSolver::GetLearningRate aborts at
# the first iteration on any other)
SOLVER_TYPES = ("SGD", "Nesterov", "AdaGrad", "RMSProp", "AdaDelta", "Adam")
LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


class PreflightError(Exception):
    """Why a run cannot start, in one line."""


class Plan(object):
    """A run as the options (``args``) and the solver file (``solver``, its SolverParameter)
    ask for it, checked: where snapshots (``prefix``) and curves (``out``) go, the test
    ``interval`` (0: no tests) and ``test_iter``, the ``weights`` files to start from or the
    state to ``resume``, the number of ``ranks`` (GPUs of ``--gpus``, or 1); ``warnings`` to
    print before training."""

    def __init__(self, args, solver):
        self.args, self.solver = args, solver
        self.max_iter = solver.max_iter
        self.prefix = snapshot_prefix(solver, args.solver)
        self.out = args.out or os.path.dirname(self.prefix) or os.curdir
        self.interval = solver.test_interval if args.test_interval is None else args.test_interval
        self.test_iter = solver.test_iter[0] if solver.test_iter else 0
        self.testing = self.interval > 0 and self.test_iter > 0
        self.resume = args.resume
        self.ranks = len(args.gpus) if getattr(args, "gpus", None) else 1
        # as `caffe train`: the solver's own weights give way to -snapshot and -weights
        self.weights = [args.weights] if args.weights else [] if args.resume else list(solver.weights)
        self.weights_from = "--weights" if args.weights else "%s: weights" % args.solver
        self.warnings = []
        self.check_solver()
        self.check_shards()
        self.check_files()
        self.check_tests()

    def check_solver(self):
        if self.args.resume and self.args.weights:
            raise PreflightError("give --resume to continue a run or --weights to start from trained "
                                 "weights, not both (a solver state holds its weights)")
        kind = solver_type(self.solver)
        if kind not in SOLVER_TYPES:
            raise PreflightError("%s: unknown solver type %r; Caffe has %s"
                                 % (self.args.solver, kind, ", ".join(SOLVER_TYPES)))
        if self.solver.lr_policy not in LR_POLICIES:
            raise PreflightError("%s: lr_policy %r is not one of Caffe's: %s"
                                 % (self.args.solver, self.solver.lr_policy, ", ".join(LR_POLICIES)))

    def check_shards(self):
        """On several GPUs, before any process starts: one step of the ranks reads ranks x
        batch_size items of each TRAIN data layer; a shorter list would give some of them
        twice in one step (the layer would fail at setup in every rank). Caffe's ImageData
        does not shard: without shuffle, every rank reads the same batches (Caffe warns)."""
        if self.ranks == 1:
            return
        gpus = ",".join(map(str, self.args.gpus))
        for layer, items, batch in train_lists(self.solver):
            what = "%r (%s) of the TRAIN net" % (layer.name, known_type(layer) or layer.type)
            if items < self.ranks * batch:
                raise PreflightError(
                    "--gpus %s: layer %s has %d %s in its list, fewer than one step of the %d ranks "
                    "reads (%d x batch_size %d = %d): they would read the same ones in one step; "
                    "give a longer list, a smaller batch_size or fewer GPUs"
                    % (gpus, what, items, "rows" if layer.type == "HDF5Data" else "images",
                       self.ranks, self.ranks, batch, self.ranks * batch))
            param = layer.image_data_param
            if layer.type == "ImageData" and not (param.shuffle or param.rand_skip):
                self.warnings.append(
                    "--gpus %s: layer %s reads its list in order in every rank, so each rank "
                    "trains on the same batches (Caffe's ImageData does not shard); set shuffle: "
                    "true (each rank shuffles with its own seed), or use MultiLabelImageData, "
                    "which shards" % (gpus, what))

    def check_files(self):
        if self.args.out is not None:
            problem = folder_problem(self.args.out)
            if problem:
                raise PreflightError("--out %s: %s; give a folder for curves.png and curves.json"
                                     % (self.args.out, problem))
        problem = folder_problem(os.path.dirname(self.prefix) or os.curdir)
        if problem:
            raise PreflightError("snapshot_prefix %s: %s; Caffe could not snapshot there"
                                 % (self.prefix, problem))
        for path, option in [(self.resume, "--resume")] + [(w, self.weights_from) for w in self.weights]:
            if path is None:
                continue
            if not os.path.isfile(path):
                raise PreflightError("%s %s: %s" % (option, path, "is a folder" if os.path.isdir(path)
                                                    else "no such file"))
            try:
                open(path, "rb").close()
            except OSError as exc:
                raise PreflightError("%s %s: %s" % (option, path, exc.strerror)) from None
        if not self.resume:
            earlier = earlier_run(self.out, self.prefix)
            if earlier:
                self.warnings.append("%s: this run writes over them (another --out or snapshot_prefix "
                                     "keeps them)" % earlier)

    def check_tests(self):
        solver, path = self.solver, self.args.solver
        if not solver.test_iter:
            if len(solver.test_net) + len(solver.test_net_param):
                raise PreflightError("%s: a test net needs test_iter, the number of test batches "
                                     "(Caffe aborts without it)" % path)
            if self.interval > 0 or tests_intended(solver):
                self.warnings.append("%s has no test_iter, so Caffe makes no test net and nothing is "
                                     "tested; add test_iter: N (N x the test batch size = the test "
                                     "set)" % path)
        elif self.interval == 0 and self.args.test_interval is None:
            self.warnings.append("%s has test_iter but no test_interval: nothing is tested; set "
                                 "test_interval, or --test-interval" % path)


def solver_type(solver):
    if solver.HasField("solver_type"):  # the deprecated enum, which Caffe upgrades
        return {0: "SGD", 1: "Nesterov", 2: "AdaGrad", 3: "RMSProp", 4: "AdaDelta",
                5: "Adam"}.get(solver.solver_type, str(solver.solver_type))
    return solver.type


def snapshot_prefix(solver, path):
    """Where Caffe writes the snapshots of the solver file ``path`` (as its
    UpgradeSnapshotPrefixProperty): ``snapshot_prefix``; the solver file's path without its
    extension when that is unset; ``FOLDER/<the solver file's name>`` when it is a folder."""
    if not solver.HasField("snapshot_prefix"):
        return os.path.splitext(path)[0]
    if os.path.isdir(solver.snapshot_prefix):
        return os.path.join(solver.snapshot_prefix, os.path.splitext(os.path.basename(path))[0])
    return solver.snapshot_prefix


def folder_problem(path):
    """Why ``path`` is not a folder this process can write into, or make; None if it is."""
    if os.path.exists(path) and not os.path.isdir(path):
        return "%s is a file" % path
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return "%s is a file" % existing
    try:  # an unnamed file where the system allows it (O_TMPFILE): nothing is left behind
        tempfile.TemporaryFile(dir=existing).close()
    except OSError as exc:
        return "cannot create a file in %s (%s)" % (existing, exc.strerror or exc)
    return None


def earlier_run(out, prefix):
    """What an earlier run left in ``out`` and at ``prefix``, in words, or ''."""
    found = [path for path in (os.path.join(out, "curves.json"), os.path.join(out, "curves.png"))
             if os.path.exists(path)]
    earlier = snapshots.earlier_snapshots(prefix)
    if earlier:
        found.append("%d snapshot files %s_iter_*" % (len(earlier), prefix))
    return "an earlier run left %s" % " and ".join(found) if found else ""


def tests_intended(solver):
    """Whether the train net file has layers of the TEST phase only."""
    try:
        net = train_net_param(solver)
    except PrototxtError:
        return False
    test = caffe_proto()[0].TEST
    return any(rule.HasField("phase") and rule.phase == test
               for layer in list(net.layer) + list(net.layers) for rule in layer.include)


def train_net_param(solver):
    caffe_pb2, _ = caffe_proto()
    for message, path in ((solver.train_net_param, solver.train_net), (solver.net_param, solver.net)):
        if message.ByteSize():
            return message
        if path:
            return read_prototxt(path, caffe_pb2.NetParameter())
    return caffe_pb2.NetParameter()


def test_net_param(solver):
    """The first test net's NetParameter and NetState, in the order Caffe makes test nets."""
    caffe_pb2, _ = caffe_proto()
    if solver.test_net_param:
        net = solver.test_net_param[0]
    elif solver.test_net:
        net = read_prototxt(solver.test_net[0], caffe_pb2.NetParameter())
    elif solver.net_param.ByteSize():
        net = solver.net_param
    else:
        net = read_prototxt(solver.net, caffe_pb2.NetParameter())
    return net, net_state(net, caffe_pb2.TEST, solver.test_state[0] if solver.test_state else None)


def net_state(net, phase, given=None):
    """The NetState Caffe builds ``net`` in: ``phase``, then the net's own state, then the
    solver's ``given`` one (``train_state``, a ``test_state``)."""
    state = caffe_proto()[0].NetState(phase=phase)
    state.MergeFrom(net.state)
    if given is not None:
        state.MergeFrom(given)
    return state


def layers_in(net, state):
    """The layers of ``net`` (V1 ``layers`` upgraded) that Caffe builds in ``state``."""
    state = NetState(state.phase, state.level, state.stage)
    return [layer for layer in current(net).layer if state.has(layer)]


def train_lists(solver):
    """``(layer, items in its list, batch size)`` of the TRAIN net's data layers whose list
    the prototxt names: ImageData, HDF5Data and MultiLabelImageData."""
    try:
        net = train_net_param(solver)
        layers = layers_in(net, net_state(net, caffe_proto()[0].TRAIN, solver.train_state))
    except PrototxtError:
        return  # Caffe says what is wrong with the net
    for layer in layers:
        found = list_length(layer)
        if found:
            yield (layer,) + found


def check_nets(plan, solver, tests):
    """The checks that need the nets Caffe built from the solver, before they train, with the
    blobs ``tests`` (an :class:`~caffe_losses.evaluation.Tests`) reads: a PreflightError, or
    warnings added to ``plan.warnings``."""
    if plan.resume:
        problem = snapshots.state_problem(plan.resume, solver.net, solver_type(plan.solver))
        if problem:
            raise PreflightError("--resume " + problem)
    for path in plan.weights:
        problem = snapshots.weights_problem(path, solver.net)
        if problem:
            raise PreflightError("%s %s" % (plan.weights_from, problem))
    if plan.testing:
        net = solver.test_nets[0]
        for blob, option in ((tests.score_blob, "--score-blob"), (tests.label_blob, "--label-blob")):
            if blob not in net.blobs:
                raise PreflightError("the test net has no blob %r (%s) for the test metrics; its blobs: "
                                     "%s" % (blob, option, ", ".join(net.blobs)))
        score, label = net.blobs[tests.score_blob].data, net.blobs[tests.label_blob].data
        if score.size != label.size:
            raise PreflightError("the test net's blobs %r (--score-blob, %s) and %r (--label-blob, %s) "
                                 "differ in size: the test metrics take one 0/1 label per score"
                                 % (tests.score_blob, snapshots.dims(score.shape), tests.label_blob,
                                    snapshots.dims(label.shape)))
        plan.warnings += coverage(plan, net)


def coverage(plan, net):
    """Warnings for the test net's data layers whose list a test does not read exactly once:
    ``test_iter`` x batch size against the length of the list, where the layer knows it."""
    warnings = []
    for name, images, batch in data_lists(plan.solver, net):
        read = plan.test_iter * batch
        if read == images:
            continue
        what = ("%d of them more than once" % (read - images) if read > images
                else "%d left out of each test" % (images - read))
        fix = ("test_iter: %d reads each once" % (images // batch) if images % batch == 0 else
               "no test_iter reads each once with batch_size %d: a batch size that divides %d does"
               % (batch, images))
        warnings.append("each test reads test_iter %d x batch_size %d = %d images from layer %r, whose "
                        "list has %d: %s; %s" % (plan.test_iter, batch, read, name, images, what, fix))
    return warnings


def data_lists(solver, net):
    """``(layer name, images in its list, batch size)`` for the data layers of the test net
    ``net`` that know the length of their list: Python layers with ``images`` and ``batch_size``
    attributes (MultiLabelImageData), ImageData and HDF5Data."""
    params = None
    for name, layer in zip(net._layer_names, net.layers):
        if layer.type == "Python":
            images, batch = getattr(layer, "images", None), getattr(layer, "batch_size", None)
            if isinstance(images, int) and isinstance(batch, int):
                yield name, images, batch
        elif layer.type in ("ImageData", "HDF5Data"):
            params = test_layers(solver) if params is None else params
            found = list_length(params[name]) if name in params else None
            if found:
                yield (name,) + found


def test_layers(solver):
    """``{name: LayerParameter}`` of the first test net's layers (V1 ``layers`` upgraded)."""
    return {layer.name: layer for layer in layers_in(*test_net_param(solver))}


def list_length(layer):
    """``(items in the list, batch size)`` of an ImageData, HDF5Data or MultiLabelImageData
    layer (a LayerParameter), or None. MultiLabelImageData's list is read with the layer's own
    rules (comments, a byte-order mark, blank lines: :mod:`caffe_losses.data.listfile`)."""
    try:
        if layer.type == "ImageData":
            with open(layer.image_data_param.source) as f:
                return sum(1 for line in f if line.strip()), layer.image_data_param.batch_size
        if layer.type == "HDF5Data":
            return hdf5_rows(layer), layer.hdf5_data_param.batch_size
        row = BY_NAME.get(known_type(layer))
        if row is not None and row.kind == "data":
            params = row.parse(layer.python_param.param_str)
            return sum(1 for _ in read_lines(params["source"])), params["batch_size"]
    except (OSError, ValueError, KeyError, ImportError, IndexError):
        pass  # Caffe, or the layer, reads the list in its own way or says what is wrong
    return None


def hdf5_rows(layer):
    """The rows of an HDF5Data layer's files: those of its first top's dataset."""
    import h5py
    with open(layer.hdf5_data_param.source) as f:
        files = f.read().split()
    rows = 0
    for path in files:
        with h5py.File(path, "r") as data:
            rows += data[layer.top[0]].shape[0]
    return rows
