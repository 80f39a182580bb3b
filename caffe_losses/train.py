"""Train a Caffe net from a solver with pycaffe: progress bar, test metrics, snapshots, curves.

    python3 -m caffe_losses.train --solver prototxt/digits_multilabel/solver.prototxt
    python3 -m caffe_losses.train --solver ... --resume output/digits_iter_500.solverstate

Runs the solver for ``max_iter`` iterations, showing a progress bar (tqdm) with the
training loss on a terminal, or a plain line every tenth of the run when the output
goes to a log. Every ``test_interval`` iterations (the solver's, or ``--test-interval``)
it runs ``test_iter`` batches of the solver's test net, gathers the score and label
blobs, and reports multi-label metrics over the whole test set (by default mean AP,
precision, recall and F1 at k = number of positives; :mod:`caffe_losses.metrics`).
``--metrics`` chooses them from precision@k, recall@k, f1@k, map, cp, cr, cf1, op, or,
of1 (ML-GCN's per-class and overall precision, recall and F1 of the predictions
score > ``--threshold``, within each sample's ``--topk`` highest scores if given); by
default the test net's MultiLabelAccuracy layer gives them (its ``metrics``,
``threshold`` and ``topk`` keys), if it has one. Snapshots
follow the solver's ``snapshot`` settings plus one at the end. Writes the curves as
``<out>/curves.png`` and ``<out>/curves.json``.

``--gpus 0`` trains on one GPU, in this process. ``--gpus 0,1`` trains on several the way
Caffe's own ``python/train.py`` does: one process per GPU, ``caffe.NCCL`` to share
gradients, so it needs a CUDA build of Caffe with NCCL (docker/Dockerfile.gpu's has none:
Debian has no NCCL). Before any GPU call (a failed one aborts Caffe with a C++ stack dump)
it checks the build and the machine, and stops with one line saying what is missing: a
CUDA build (Debian's ``caffe`` package is CPU-only), NCCL, or a GPU.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

from . import metrics
from .cli import PrototxtError, caffe_proto, read_prototxt


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m caffe_losses.train",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--solver", required=True, help="solver prototxt")
    parser.add_argument("--resume", help="a .solverstate to continue from")
    parser.add_argument("--weights", help="a .caffemodel to start from (fine-tuning)")
    parser.add_argument("--out", help="where curves go (default: the snapshot_prefix folder)")
    parser.add_argument("--test-interval", type=int, help="override the solver's test_interval")
    parser.add_argument("--score-blob", default="score", help="test-net blob with the class scores")
    parser.add_argument("--label-blob", default="label", help="test-net blob with the labels")
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
    return parser.parse_args(argv)


def metric_list(text):
    """``--metrics``: a comma list of metric names."""
    try:
        return tuple(metrics.metric_names([m.strip() for m in text.split(",") if m.strip()]))
    except ValueError as exc:
        raise argparse.ArgumentTypeError("the list %s" % exc)


def gpu_ids(text):
    """``--gpus``: comma-separated GPU ids, as a list of ints."""
    try:
        ids = [int(g) for g in text.split(",")]
    except ValueError:
        ids = []
    if not ids or min(ids) < 0 or len(set(ids)) != len(ids):
        raise argparse.ArgumentTypeError("takes distinct GPU ids separated by commas (0 or 0,1), "
                                         "got %r" % text)
    return ids


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("must be an integer >= 1, got %r" % text)
    return value


def metric_settings(args, net):
    """``(metrics, topk, threshold)``: the options given, else those of the first
    MultiLabelAccuracy layer of the test net, else the defaults."""
    layer = None
    for candidate in (net.layers if net is not None else []):
        if isinstance(getattr(candidate, "metric", None), metrics.MultiLabelMetrics):
            layer = candidate.metric
            break
    names = args.metrics or (layer.metrics if layer is not None else metrics.DEFAULT_METRICS)
    topk = args.topk if args.topk is not None else (layer.topk if layer is not None else None)
    threshold = args.threshold if args.threshold is not None else (
        layer.threshold if layer is not None else 0.0)
    return tuple(names), topk, threshold


def metrics_line(row, names):
    """The metrics of a test, as printed; the default metrics keep their own fixed wording."""
    if tuple(names) == metrics.DEFAULT_METRICS:
        return "test mAP %.4f, F1@k %.4f, precision %.4f, recall %.4f" % (
            row["map"], row["f1"], row["precision"], row["recall"])
    return "test " + ", ".join("%s %.4f" % (metrics.LABELS[n], row[metrics.KEYS.get(n, n)])
                               for n in names)


def final_line(row, names):
    if tuple(names) == metrics.DEFAULT_METRICS:
        return "final test: mAP %.4f, F1@k %.4f, precision@k %.4f, recall@k %.4f" % (
            row["map"], row["f1"], row["precision"], row["recall"])
    return "final " + metrics_line(row, names).replace("test ", "test: ", 1)


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


def evaluate(net, iterations, score_blob, label_blob, names=metrics.DEFAULT_METRICS, topk=None,
             threshold=0.0):
    """Metrics over ``iterations`` test batches, on the gathered scores (not averaged per batch):
    ``{key: value}``, keys as :data:`caffe_losses.metrics.KEYS` (``precision@k`` is
    ``precision``, ...; the others their own name)."""
    scores, labels = [], []
    for _ in range(iterations):
        net.forward()
        scores.append(net.blobs[score_blob].data.reshape(net.blobs[score_blob].data.shape[0], -1).copy())
        labels.append(net.blobs[label_blob].data.reshape(scores[-1].shape).copy())
    s, y = np.concatenate(scores), np.concatenate(labels)
    values = metrics.compute(s, y, names, topk=topk, threshold=threshold)
    return {metrics.KEYS.get(name, name): value for name, value in zip(names, values)}


def progress(total, initial, quiet):
    """A tqdm bar, or None when quiet, without tqdm, or when stderr is not a terminal."""
    if quiet:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    # disable=None: off when stderr is not a terminal, where every redraw would be a log line
    bar = tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True, disable=None)
    return None if bar.disable else bar


def plot_curves(history, path, names=metrics.DEFAULT_METRICS):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    it, loss = zip(*history["train"]) if history["train"] else ((), ())
    left.plot(it, loss, color="tab:blue")
    left.set_xlabel("iteration")
    left.set_ylabel("training loss")
    left.set_title("training loss")
    left.grid(alpha=0.3)
    if history["test"]:
        iters = [row["iter"] for row in history["test"]]
        for name in names:
            key = metrics.KEYS.get(name, name)
            right.plot(iters, [row[key] for row in history["test"]], marker="o",
                       label=metrics.LABELS[name])
    right.set_xlabel("iteration")
    right.set_ylim(0, 1)
    right.set_title("test metrics")
    right.grid(alpha=0.3)
    if history["test"]:
        right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def train(args, solver_param, rank=0, gpus=None, uid=None):
    import caffe
    multi = gpus is not None and len(gpus) > 1
    if gpus:
        caffe.set_device(gpus[rank])
        caffe.set_mode_gpu()
    if multi:
        caffe.set_solver_count(len(gpus))
        caffe.set_solver_rank(rank)
        caffe.set_multiprocess(True)
    if not gpus:
        caffe.set_mode_cpu()
    prefix_dir = os.path.dirname(solver_param.snapshot_prefix)
    if prefix_dir:
        os.makedirs(prefix_dir, exist_ok=True)  # Caffe aborts if it cannot snapshot there
    solver = caffe.get_solver(args.solver)
    if args.resume:
        solver.restore(args.resume)
    elif args.weights:
        solver.net.copy_from(args.weights)
    if multi:
        nccl = caffe.NCCL(solver, uid)
        nccl.bcast()
        solver.add_callback(nccl)
        if solver.param.layer_wise_reduce:
            solver.net.after_backward(nccl)
    if rank != 0:
        solver.step(solver_param.max_iter - solver.iter)
        return None

    out = args.out or os.path.dirname(solver_param.snapshot_prefix) or "."
    os.makedirs(out, exist_ok=True)
    interval = args.test_interval or solver_param.test_interval or 0
    test_iter = solver_param.test_iter[0] if solver_param.test_iter else 0
    history = {"train": [], "test": []}
    names, topk, threshold = metric_settings(args, solver.test_nets[0] if solver.test_nets else None)
    bar = progress(solver_param.max_iter, solver.iter, args.quiet)
    # Without a bar (output to a log), a plain line every tenth of the run instead.
    every = None if bar is not None or args.quiet else max(1, solver_param.max_iter // 10)
    reported = solver.iter
    chunk = max(1, min(solver_param.display or 20, 50))
    start = time.time()
    while solver.iter < solver_param.max_iter:
        steps = min(chunk, solver_param.max_iter - solver.iter)
        if interval:
            steps = min(steps, interval - solver.iter % interval)
        solver.step(steps)
        loss = float(solver.net.blobs["loss"].data) if "loss" in solver.net.blobs else float("nan")
        history["train"].append((solver.iter, loss))
        if bar:
            bar.update(steps)
            bar.set_postfix(loss="%.4f" % loss)
        elif every and (solver.iter // every > reported // every or solver.iter == solver_param.max_iter):
            reported = solver.iter
            print("iteration %d/%d: loss %.4f (%.0f s)" % (solver.iter, solver_param.max_iter, loss,
                                                          time.time() - start), flush=True)
        if interval and test_iter and solver.test_nets and (
                solver.iter % interval == 0 or solver.iter == solver_param.max_iter):
            row = dict(evaluate(solver.test_nets[0], test_iter, args.score_blob, args.label_blob,
                                names, topk, threshold), iter=solver.iter)
            history["test"].append(row)
            line = "iteration %d: %s" % (row["iter"], metrics_line(row, names))
            if bar:
                bar.write(line)
            else:
                print(line, flush=True)
    if bar:
        bar.close()
    solver.snapshot()
    with open(os.path.join(out, "curves.json"), "w") as f:
        json.dump(history, f, indent=1)
    plot_curves(history, os.path.join(out, "curves.png"), names)
    print("trained %d iterations in %.1f s; curves: %s; snapshots: %s_iter_%d.*"
          % (solver.iter, time.time() - start, os.path.join(out, "curves.png"),
             solver_param.snapshot_prefix, solver.iter))
    if history["test"]:
        print(final_line(history["test"][-1], names))
    return history


# Run in a child process: CUDA initialised here before the workers fork breaks them. Prints
# the number of GPUs, or 0 and why there is none. libcuda.so.1 is the driver's library: a
# container gets it from the host (docker run --gpus all), or has none.
_COUNT_GPUS = r"""
import ctypes, sys
try:
    ctypes.CDLL("libcuda.so.1")
except OSError:
    print("0 nodriver")
    sys.exit()
runtime = ctypes.CDLL(sys.argv[1])
runtime.cudaGetErrorString.restype = ctypes.c_char_p
count = ctypes.c_int(0)
error = runtime.cudaGetDeviceCount(ctypes.byref(count))
print("%d %s" % (count.value if error == 0 else 0,
                 runtime.cudaGetErrorString(error).decode() if error else ""))
"""


def cuda_runtime():
    """The path of the CUDA runtime library the loaded pycaffe uses, or None: a CPU-only Caffe
    (Caffe's CMake files and Makefile both link a CUDA build with the shared runtime)."""
    import caffe  # noqa: F401 (loads libcaffe and with it the CUDA runtime, if it has one)
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                if len(fields) >= 6 and "/libcudart.so" in fields[5]:
                    return fields[5]
    except OSError:
        pass
    return None


def count_gpus(runtime):
    """``(number of GPUs, why there are none)`` as the CUDA runtime at ``runtime`` sees them."""
    probe = subprocess.run([sys.executable, "-c", _COUNT_GPUS, runtime], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, universal_newlines=True)
    last = (probe.stdout.strip().splitlines() or [""])[-1]
    number, _, why = last.partition(" ")
    if probe.returncode != 0 or not number.isdigit():
        return 0, "the CUDA runtime failed: %s" % (last or "exit status %d" % probe.returncode)
    if why == "nodriver":
        why = ("this machine or container has no NVIDIA driver (libcuda.so.1); on a machine "
               "with an NVIDIA GPU, start the container with `docker run --gpus all ...`")
    elif why:
        why = "CUDA says: %s" % why
    return int(number), why


def has_nccl(caffe):
    """Whether this pycaffe was built with NCCL: without it, caffe.NCCL is there too, but an
    empty stub (no new_uid, no bcast)."""
    return hasattr(getattr(caffe, "NCCL", None), "new_uid")


def gpu_problem(gpus, runtime, nccl, count=None, why=""):
    """Why ``--gpus`` cannot run, or None. ``runtime``: the CUDA runtime pycaffe uses (None for a
    CPU-only Caffe); ``nccl``: whether Caffe has NCCL; ``count``: the number of GPUs (None: ask
    the runtime) and ``why`` there are none."""
    need = "a CUDA build of Caffe with NCCL" if len(gpus) > 1 else "a CUDA build of Caffe"
    if runtime is None:
        return ("--gpus needs %s, but this Caffe is a CPU-only build (Debian's is): %s, or drop "
                "--gpus to train on the CPU" % (need, "use docker/Dockerfile.gpu on a machine with "
                "a GPU" if len(gpus) == 1 else "docker/Dockerfile.gpu's CUDA build trains on one "
                "GPU (Debian has no NCCL)"))
    if len(gpus) > 1 and not nccl:
        return ("--gpus needs %s, but this Caffe was built without NCCL (Debian has none, so "
                "docker/Dockerfile.gpu's Caffe neither): train on one GPU, --gpus %d"
                % (need, gpus[0]))
    if count is None:
        count, why = count_gpus(runtime)
    if count == 0:
        return ("--gpus %s: no GPU is present: %s; or drop --gpus to train on the CPU"
                % (",".join(map(str, gpus)), why or "CUDA sees none"))
    missing = [g for g in gpus if g >= count]
    if missing:
        return ("--gpus %s: there is no GPU %d here: CUDA sees %d (ids 0 to %d)"
                % (",".join(map(str, gpus)), missing[0], count, count - 1))
    return None


def main(argv=None):
    args = parse_args(argv)
    try:
        solver_param = read_solver(args.solver)
    except PrototxtError as exc:
        sys.stderr.write("caffe_losses.train: %s\n" % exc)
        sys.exit(2)
    if args.gpus:
        import caffe
        problem = gpu_problem(args.gpus, cuda_runtime(), has_nccl(caffe))
        if problem:
            sys.exit("caffe_losses.train: " + problem)
        if len(args.gpus) == 1:
            train(args, solver_param, gpus=args.gpus)
            return
        from multiprocessing import Process
        gpus = args.gpus
        uid = caffe.NCCL.new_uid()
        caffe.init_log()
        workers = [Process(target=train, args=(args, solver_param, rank, gpus, uid))
                   for rank in range(len(gpus))]
        for w in workers:
            w.daemon = True
            w.start()
        for w in workers:
            w.join()
        return
    train(args, solver_param)


if __name__ == "__main__":
    main()
