r"""Train a Caffe net from a solver with pycaffe: progress, test metrics, snapshots, curves.

From the repository root (the toy example's data first)::

    python3 examples/toy_multilabel/make_data.py examples/toy_multilabel/data
    python3 -m caffe_losses.train --solver examples/toy_multilabel/solver.prototxt
    python3 -m caffe_losses.train --solver examples/toy_multilabel/solver.prototxt \
        --weights examples/toy_multilabel/output/toy_iter_400.caffemodel --metrics map,cf1,of1 \
        --out examples/toy_multilabel/output/finetuned

Runs the solver to ``max_iter``, showing a progress bar (tqdm) with the training loss (the
net's loss outputs times their loss weights, as Caffe sums them) on a terminal, or a plain
line every tenth of the run when the output goes to a log. Every ``test_interval``
iterations (the solver's, or ``--test-interval``; 0: no tests) it runs ``test_iter`` batches
of the solver's test net, gathers the score and label blobs, and reports multi-label metrics
on them all (by default mean AP, precision, recall and F1 at k = number of positives;
:mod:`caffe_losses.metrics`). ``--metrics`` chooses them from precision@k, recall@k, f1@k,
map, cp, cr, cf1, op, or, of1 (ML-GCN's per-class and overall precision, recall and F1 of
the predictions score > ``--threshold``, within each sample's ``--topk`` highest scores if
given). By default the test net's MultiLabelAccuracy layer gives them (its bottoms, and its
``metrics``, ``threshold`` and ``topk`` keys), if it has one. Snapshots follow the solver's
``snapshot`` settings, plus one at the end (unless ``snapshot_after_train: false``); the
curves go beside them, ``curves.png`` and ``curves.json`` (or into ``--out``).

Before the first iteration it checks what Caffe would find late or abort on (the blobs,
the folders, the files to start from; :mod:`caffe_losses.preflight`). Ctrl-C (SIGINT) or
SIGTERM stops after the current iteration with a snapshot and the curves, and prints the
command that continues the run (``--resume PREFIX_iter_N.solverstate``); a second one stops
at once. SIGHUP snapshots and goes on. As ``caffe train``, exit status 0 after SIGINT
(128 + 15 after SIGTERM).

``--gpus 0`` trains on one GPU, in this process. ``--gpus 0,1`` trains on several the way
Caffe's own ``python/train.py`` does (:mod:`caffe_losses.ranks`): one process per GPU,
``caffe.NCCL`` to share gradients, so it needs a CUDA build of Caffe with NCCL
(docker/Dockerfile.gpu's has NCCL 2.21.5 from PyPI's nvidia-nccl-cu11). Rank 0 tests,
reports and snapshots; the signals stop every rank after the same iteration
(:mod:`caffe_losses.signals`). Before any GPU call (a failed one aborts Caffe with a C++
stack dump) it checks the build and the machine, and stops with one line saying what is
missing: a CUDA build (Debian's ``caffe`` package is CPU-only), NCCL, or a GPU (and warns
where several GPUs are newer than NCCL's kernels).
"""
import argparse
import functools
import os
import shlex
import signal
import sys
import tempfile

from . import metrics, preflight, ranks, reporting, snapshots
from .gpus import gpu_ids, problem_here, share_gradients, use_device
from .prototxt import PrototxtError, caffe_proto, read_prototxt
from .evaluation import Tests, evaluate  # noqa: F401 (evaluate: part of this module's interface)
from .signals import Signals

PROG = "caffe_losses.train"
# test_interval of the solver Caffe runs: it never reaches it, so Caffe never tests by itself
NEVER = 2 ** 31 - 1


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, as every other reason to stop
        self.exit(2, "%s: %s (see --help)\n" % (PROG, message))


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    # no abbreviations: the command printed to resume is the one given, less --resume/--weights
    parser = Parser(prog="python3 -m caffe_losses.train", description=__doc__.split("\n")[0],
                    allow_abbrev=False)
    parser.add_argument("--solver", required=True, help="solver prototxt")
    parser.add_argument("--resume", help="a .solverstate to continue from")
    parser.add_argument("--weights", help="a .caffemodel to start from (fine-tuning)")
    parser.add_argument("--out", help="where curves go (default: beside the snapshots)")
    parser.add_argument("--test-interval", type=non_negative_int,
                        help="test every this many iterations, 0: never (default: the solver's)")
    parser.add_argument("--score-blob", help="test-net blob with the class scores (default: the "
                        "first bottom of its MultiLabelAccuracy, else score)")
    parser.add_argument("--label-blob", help="test-net blob with the labels (default: the second "
                        "bottom of its MultiLabelAccuracy, else label)")
    parser.add_argument("--metrics", type=metric_list, metavar="A[,B...]",
                        help="test metrics, in order, from %s (default: the test net's "
                             "MultiLabelAccuracy 'metrics', else %s)"
                        % (",".join(metrics.METRICS), ",".join(metrics.DEFAULT_METRICS)))
    parser.add_argument("--threshold", type=float,
                        help="cp ... of1: a score > threshold is a prediction (default: the test "
                             "net's MultiLabelAccuracy 'threshold', else 0)")
    parser.add_argument("--topk", type=positive_int,
                        help="cp ... of1: predictions only among each sample's topk highest scores "
                             "(default: the test net's MultiLabelAccuracy 'topk', else none)")
    parser.add_argument("--gpus", type=gpu_ids, metavar="ID[,ID...]",
                        help="train on these GPUs (a CUDA build of Caffe; more than one GPU: one "
                             "process per GPU, and Caffe built with NCCL)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    args.given = argv
    return args


def metric_list(text):
    """``--metrics``: a comma list of metric names."""
    try:
        return tuple(metrics.metric_names([m.strip() for m in text.split(",") if m.strip()]))
    except ValueError as exc:
        raise argparse.ArgumentTypeError("the list %s" % exc)


def positive_int(text, minimum=1):
    try:
        value = int(text)
    except ValueError:
        value = minimum - 1
    if value < minimum:
        raise argparse.ArgumentTypeError("must be an integer >= %d, got %r" % (minimum, text))
    return value


def non_negative_int(text):
    return positive_int(text, minimum=0)


def read_solver(path):
    """The solver's SolverParameter, after checking that the net files it names parse too."""
    caffe_pb2, _ = caffe_proto()
    solver = read_prototxt(path, caffe_pb2.SolverParameter())
    # Caffe aborts the process with a C++ stack trace on a net file it cannot read, so
    # read them here first. Like Caffe, relative paths are taken from the current directory.
    for net in [solver.net, solver.train_net] + list(solver.test_net):
        if net:
            try:
                read_prototxt(net, caffe_pb2.NetParameter())
            except PrototxtError as exc:
                raise PrototxtError("%s (the net of %s)" % (exc, path)) from None
    return solver


def make_solver(plan, tests=True):
    """The solver Caffe runs: the user's, less what this script does itself between steps
    (snapshots, tests, loading weights), its test nets sharing the train net's weights; with
    no test nets unless ``tests`` (on GPU ranks but 0, which never test)."""
    import caffe
    param = type(plan.solver)()
    param.CopyFrom(plan.solver)
    param.snapshot_prefix = plan.prefix  # resolved as Caffe resolves it from the user's file
    param.snapshot = 0  # Caffe would also write a probe file into the folder at construction
    param.ClearField("weights")  # loaded once they are known to fit
    if plan.testing and tests:
        param.test_interval, param.test_initialization = NEVER, False
    else:  # no test nets at all: nothing to build, no data workers to start
        for field in ("test_iter", "test_net", "test_net_param", "test_state", "test_interval"):
            param.ClearField(field)
    _, text_format = caffe_proto()
    handle, path = tempfile.mkstemp(suffix=".prototxt")
    try:
        with os.fdopen(handle, "w") as f:
            f.write(text_format.MessageToString(param))
        solver = caffe.get_solver(path)
    finally:
        os.remove(path)
    for net in solver.test_nets:
        net.share_with(solver.net)
    return solver


def snapshot(solver, plan):
    """Snapshot now; the files Caffe wrote."""
    folder = os.path.dirname(plan.prefix)
    if folder:
        os.makedirs(folder, exist_ok=True)
    solver.snapshot()
    return [p for p in snapshots.names(plan.prefix, solver.iter, plan.solver.snapshot_format)
            if os.path.exists(p)]


def train_loss(net, weighted):
    """The net's loss as Caffe sums it: each loss output times its loss weight."""
    return float(sum(weight * net.blobs[name].data.sum() for name, weight in weighted))


def build(args, plan, rank=0, gpus=None, gpu_mode=True):
    """The solver of rank ``rank`` of ``gpus`` (see :func:`~caffe_losses.gpus.use_device`) and
    its :class:`~caffe_losses.evaluation.Tests`; test nets on rank 0 only."""
    use_device(gpus, rank, gpu_mode)
    solver = make_solver(plan, tests=rank == 0)
    return solver, Tests(args, solver.test_nets[0] if len(solver.test_nets) else None)


def train(args, plan, rank=0, gpus=None, uid=None, signals=None):
    """Train as ``plan`` (a checked :class:`~caffe_losses.preflight.Plan`) says, as solver
    ``rank`` of ``len(gpus)``; returns the exit status. ``signals``: the run's
    :class:`~caffe_losses.signals.Signals`, shared by its ranks, on several GPUs; None: one
    process, which checks its nets and takes the signals itself."""
    solver, tests = build(args, plan, rank, gpus)
    if signals is None:
        warn(check_nets(plan, solver, tests))
    if plan.resume:
        solver.restore(plan.resume)
    for path in plan.weights:
        solver.net.copy_from(path)
    if signals is not None:
        share_gradients(solver, uid)
        if rank != 0:  # the solvers step together; rank 0 reports, tests and snapshots
            signals.follow()
            while signals.go_on(solver.iter):
                solver.step(1)
            return 0
    return run(solver, plan, tests, signals or Signals(plan.max_iter))


def check_nets(plan, solver, tests):
    """The checks of the built nets (:func:`caffe_losses.preflight.check_nets`); the warnings."""
    preflight.check_nets(plan, solver, tests)
    return plan.warnings


def checked_warnings(args, plan):
    """In a child process, before the ranks start: the nets built as rank 0 builds them, on
    the CPU, and checked; the warnings."""
    return check_nets(plan, *build(args, plan, 0, args.gpus, gpu_mode=False))


def warn(warnings):
    for warning in warnings:
        sys.stderr.write("%s: warning: %s\n" % (PROG, warning))
    sys.stderr.flush()


def run(solver, plan, tests, signals):
    """The training loop, one iteration per step so that a signal acts after the current one
    (on several GPUs: on rank 0, after the iteration the ranks agree on)."""
    window = max(1, min(plan.solver.display or 20, 50))
    history = reporting.earlier_history(plan.out, solver.iter) if plan.resume else None
    progress = reporting.Progress(solver.iter, plan.max_iter, window, plan.args.quiet, history)
    where = " on GPUs %s" % ",".join(map(str, plan.args.gpus)) if signals.ahead else ""
    if solver.iter < plan.max_iter:
        progress.say("training iterations %d to %d%s (Ctrl-C: stop after the current one, with a "
                     "snapshot)" % (solver.iter + 1, plan.max_iter, where))
    else:
        progress.say("nothing to train: at iteration %d, the solver's max_iter" % solver.iter)
    weighted = [(name, w) for name, w in solver.net.blob_loss_weights.items() if w]
    snapshot_at, files = None, []
    while signals.go_on(solver.iter):
        solver.step(1)
        progress.step(solver.iter, train_loss(solver.net, weighted))
        asked = signals.take_snapshot()
        if asked or due(plan.solver.snapshot, solver.iter):
            snapshot_at, files = solver.iter, snapshot(solver, plan)
            if asked:
                progress.say("iteration %d: snapshot (SIGHUP): %s" % (solver.iter, ", ".join(files)))
        if plan.testing and (due(plan.interval, solver.iter) or solver.iter == plan.max_iter):
            row = tests.run(solver.test_nets[0], plan.test_iter, lambda: signals.stop is not None)
            if row is not None:
                progress.test(dict(row, iter=solver.iter), tests.names)
    progress.keep(solver.iter)
    progress.close()
    return finish(solver, plan, tests, progress, signals, files if snapshot_at == solver.iter else None)


def due(every, iteration):
    """Whether something done every ``every`` iterations (0: never) is due after ``iteration``."""
    return bool(every) and iteration % every == 0


def finish(solver, plan, tests, progress, signals, written):
    """The last snapshot (unless ``written`` at this iteration), the curves and the closing
    lines; the exit status."""
    if written is None and (signals.stop or plan.solver.snapshot_after_train):
        written = snapshot(solver, plan)
    figure = reporting.write_curves(progress.history, plan.out, tests.names)
    files = ", ".join(written) if written else "none (snapshot_after_train: false)"
    if signals.stop:
        print("stopped by %s after iteration %d of %d (%.1f s); snapshot: %s; curves: %s"
              % (signal.Signals(signals.stop).name, solver.iter, plan.max_iter, progress.seconds(),
                 files, figure))
        state = snapshots.names(plan.prefix, solver.iter, plan.solver.snapshot_format)[1]
        print("to resume: %s" % resume_command(plan.args, state), flush=True)
    else:
        print("trained %d iterations in %.1f s; curves: %s; snapshots: %s"
              % (solver.iter, progress.seconds(), figure, files))
        if progress.history["test"]:
            print(reporting.final_line(progress.history["test"][-1], tests.names), flush=True)
    status = signals.exit_status()
    signals.restore()
    return status


def resume_command(args, state):
    """The command given, less ``--resume`` and ``--weights``, plus ``--resume state``."""
    words, skip = [], False
    for word in args.given:
        if skip:
            skip = False
        elif word in ("--resume", "--weights"):
            skip = True
        elif not word.startswith(("--resume=", "--weights=")):
            words.append(word)
    return " ".join(shlex.quote(w) for w in ["python3", "-m", PROG] + words + ["--resume", state])


def train_on_gpus(args, plan):
    """``--gpus`` with several ids: the nets checked in a child process, then one process per
    GPU (:func:`caffe_losses.ranks.run`); the exit status of rank 0. The signals' handler is
    installed first, so that every process of the run has it."""
    import caffe
    signals = Signals(plan.max_iter, len(args.gpus))
    try:
        # NCCL's id of this run, as python/train.py makes it. (Not its caffe.init_log(): that
        # installs glog's failure handler, which would take SIGTERM from the Signals' handler.)
        uid = caffe.NCCL.new_uid()
        warn(ranks.call_in_child(checked_warnings, args, plan, expected=(preflight.PreflightError,)))
        if signals.stop:
            return interrupted(signals.stop)
        return ranks.run(functools.partial(train, args, plan, gpus=args.gpus, uid=uid,
                                           signals=signals), args.gpus)
    finally:
        signals.restore()


def interrupted(number):
    sys.stderr.write("%s: interrupted before training; nothing was written\n" % PROG)
    return 128 + number


def main(argv=None):
    args = parse_args(argv)
    try:
        plan = preflight.Plan(args, read_solver(args.solver))
        found = []
        problem = problem_here(args.gpus, found) if args.gpus else None
        if problem:
            sys.exit("%s: %s" % (PROG, problem))
        warn(found)
        if args.gpus and len(args.gpus) > 1:
            status = train_on_gpus(args, plan)
        else:
            status = train(args, plan, gpus=args.gpus)
    except (PrototxtError, preflight.PreflightError) as exc:
        sys.stderr.write("%s: %s\n" % (PROG, exc))
        sys.exit(2)
    except (ranks.ChildFailed, ranks.RankFailure) as exc:
        sys.exit("%s: %s" % (PROG, exc if isinstance(exc, ranks.RankFailure)
                             else "building the nets to check them %s" % exc))
    except KeyboardInterrupt:  # before the first iteration: nothing to keep
        sys.exit(interrupted(signal.SIGINT))
    if status:
        sys.exit(status)


if __name__ == "__main__":
    main()
