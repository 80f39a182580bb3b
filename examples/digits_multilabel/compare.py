"""Train the digits net with every multi-label loss, three seeds each, and compare test metrics.

    python3 examples/digits_multilabel/compare.py [--iters 1500] [--seeds 1,2,3]    (or: make compare)

For each loss of LOSSES, the loss layer of prototxt/digits_multilabel/train_val.prototxt is
swapped with the prototxt tool (caffe_losses.prototxt.swap) and the net is trained with the demo's
solver by caffe_losses.train, in a process of its own, once per seed: the seed is the solver's
random_seed (weights) and the seed of the order of the training canvases. The final weights
are then measured on the 1,000 held-out canvases: mAP ranks the scores; CF1 and OF1 count the
digits each loss predicts (PREDICTED says how). Writes output/compare/compare.{md,json,png}:
mean and standard deviation over the seeds, as a table and as bars with error bars.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")  # before caffe is imported: no net-setup log
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # as run.sh: faster for Caffe's small matrices
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
NETS = os.path.join(REPO, "prototxt", "digits_multilabel")
sys.path.insert(0, REPO)

from caffe_losses import metrics, prototxt  # noqa: E402

# Each loss with the param_str keys it is trained with (besides them, the layer's defaults).
LOSSES = [
    ("MultiLabelSoftmaxLoss", {}),
    ("SigmoidCrossEntropyLoss", {}),
    # RetinaNet's alpha 0.25 weighs the positives down, for detection's thousand easy
    # negatives per object; here a canvas has 1 to 3 positives in 10 classes
    ("SigmoidFocalLoss", {"gamma": 2.0, "alpha": None}),
    ("AsymmetricLoss", {"gamma_pos": 0.0, "gamma_neg": 4.0, "clip": 0.05}),  # the paper's for COCO
    ("ZLPRLoss", {}),
]
# How the scores become predicted digits for CF1 and OF1: score > 0 (a probability above 0.5
# for the sigmoid losses; ZLPR's own rule), except for the multi-label softmax, whose scores
# are shift-invariant: there a softmax probability above the uniform 1/C.
PREDICTED = {"MultiLabelSoftmaxLoss": "softmax probability > 1/C"}
METRICS = ("map", "cf1", "of1")
LABELS = {"map": "mAP", "cf1": "CF1", "of1": "OF1"}

# Caffe's HDF5Data shuffles with std::random_shuffle, which draws from C's rand(): the
# solver's random_seed does not reach it. And LLVM, under numba, reseeds rand() at random
# when it loads the first kernel. So the child loads one kernel, then seeds rand() with the
# seed: each seed its own order of the canvases, the same in every run.
SEEDED_TRAIN = "\n".join([
    "import ctypes, sys",
    "import numpy as np",
    "from caffe_losses import functional, train",
    "x = np.zeros((1, 2), np.float32)",
    "functional.sigmoid_cross_entropy(x, x)",
    "ctypes.CDLL(None).srand(int(sys.argv[1]))",
    "train.main(sys.argv[2:])",
])


def main():
    args, seeds = options(__doc__, "compare")
    make_data()
    start, load = time.time(), os.getloadavg()
    results = {}
    for loss, params in LOSSES:
        runs = []
        for seed in seeds:
            folder = os.path.join(args.out, loss, "seed%d" % seed)
            os.makedirs(folder, exist_ok=True)
            net = prototxt.read_net(os.path.join(NETS, "train_val.prototxt"))
            prototxt.swap(net, loss, "loss", params)
            print("== %s, seed %d" % (loss, seed), flush=True)
            row, run = measured_run(net, folder, seed, args.iters, loss)
            runs.append(row)
        results[loss] = dict({"params": params, "predicted": PREDICTED.get(loss, "score > 0")}, **statistics(runs))
    minutes = (time.time() - start) / 60
    summary = {"iters": run["iters"], "seeds": seeds, "minutes": round(minutes, 1),
               "load_average": [load, os.getloadavg()], "losses": results}
    write_summary(args.out, "compare", summary, markdown(summary))
    plot(summary, os.path.join(args.out, "compare.png"))
    print("wrote %s/compare.{md,json,png} (%.1f minutes)" % (args.out, minutes))


def options(doc, name, more=None):
    """The command line of a script that trains the digits net once per seed: (args, seeds).
    ``more(parser)`` adds a script's own options."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    if more:
        more(parser)
    parser.add_argument("--iters", type=int, help="iterations per run (default: the solver's max_iter)")
    parser.add_argument("--seeds", default="1,2,3", help="comma-separated seeds (default: 1,2,3)")
    parser.add_argument("--out", default=os.path.join(HERE, "output", name))
    args = parser.parse_args()
    return args, [int(s) for s in args.seeds.split(",")]


def make_data():
    """The digits data set, made unless it is there."""
    if not os.path.exists(os.path.join(HERE, "data", "train.txt")):
        subprocess.run([sys.executable, os.path.join(HERE, "make_data.py"), os.path.join(HERE, "data")],
                       check=True)


def train_seed(net, folder, seed, iters=None, weights=None):
    """Train ``net`` (a NetParameter, written to ``folder``) with the demo's solver in a
    process of its own, ``seed`` its random_seed and the seed of the order of the training
    canvases, from ``weights`` if given. Returns the net's path, the final weights, the
    test batches, the seconds and the iterations."""
    caffe_pb2, text_format = prototxt.caffe_proto()
    net_path = os.path.join(folder, "train_val.prototxt")
    with open(net_path, "w") as f:
        f.write(prototxt.net_text(net))
    solver = prototxt.read_prototxt(os.path.join(NETS, "solver.prototxt"), caffe_pb2.SolverParameter())
    solver.net = net_path
    solver.snapshot = 0  # the training script still writes the final weights
    solver.snapshot_prefix = os.path.join(folder, "digits")
    solver.random_seed = seed
    solver.max_iter = iters or solver.max_iter
    solver_path = os.path.join(folder, "solver.prototxt")
    with open(solver_path, "w") as f:
        f.write(text_format.MessageToString(solver))
    done = subprocess.run([sys.executable, "-c", SEEDED_TRAIN, str(seed), "--solver", solver_path, "--quiet"]
                          + (["--weights", weights] if weights else []), cwd=REPO, stdout=subprocess.PIPE,
                          universal_newlines=True, env=dict(os.environ, GLOG_minloglevel="2", PYTHONPATH=REPO
                                                            + os.pathsep + os.environ.get("PYTHONPATH", "")))
    if done.returncode:
        sys.exit(done.stdout + "\ntraining %s with seed %d failed" % (folder, seed))
    trained = re.search(r"trained (\d+) iterations in ([\d.]+) s", done.stdout)
    print("   " + trained.group(0), flush=True)
    return {"net": net_path, "weights": "%s_iter_%d.caffemodel" % (solver.snapshot_prefix, solver.max_iter),
            "test_iter": solver.test_iter[0], "seconds": float(trained.group(2)), "iters": solver.max_iter}


def measured_run(net, folder, seed, iters, loss, weights=None):
    """train_seed, then measure: the metrics of the final weights (with the seed and the
    seconds) and train_seed's result."""
    run = train_seed(net, folder, seed, iters, weights)
    row = measure(run["net"], run["weights"], loss, run["test_iter"])
    row.update(seed=seed, seconds=run["seconds"])
    print("   " + ", ".join("%s %.4f" % (LABELS[m], row[m]) for m in METRICS), flush=True)
    return row, run


def statistics(runs):
    """The runs' metrics, their means and standard deviations over the seeds."""
    return {"runs": runs, "mean": {m: float(np.mean([r[m] for r in runs])) for m in METRICS},
            "sd": {m: float(np.std([r[m] for r in runs], ddof=1)) if len(runs) > 1 else 0.0 for m in METRICS}}


def write_summary(out, name, summary, text):
    """OUT/NAME.json (the summary) and OUT/NAME.md (the text), printed."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, name + ".json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(out, name + ".md"), "w") as f:
        f.write(text)
    print(text)


def measure(net_path, weights, loss, batches):
    """mAP of the test scores, and CF1 and OF1 of the digits predicted (see PREDICTED)."""
    import caffe
    caffe.set_mode_cpu()
    net = caffe.Net(net_path, weights, caffe.TEST)
    scores, labels = [], []
    for _ in range(batches):
        net.forward()
        scores.append(net.blobs["score"].data.copy())
        labels.append(net.blobs["label"].data.copy())
    s, y = np.concatenate(scores), np.concatenate(labels)
    (mean_ap,) = metrics.compute(s, y, ["map"])
    if loss == "MultiLabelSoftmaxLoss":  # see PREDICTED
        p = np.exp(s - s.max(axis=1, keepdims=True))
        cf1, of1 = metrics.compute(p / p.sum(axis=1, keepdims=True), y, ["cf1", "of1"],
                                   threshold=1.0 / s.shape[1])
    else:
        cf1, of1 = metrics.compute(s, y, ["cf1", "of1"], threshold=0.0)
    return {"map": mean_ap, "cf1": cf1, "of1": of1}


def markdown(summary):
    lines = ["Test metrics after %d iterations, mean ± sd over seeds %s (1,000 held-out canvases):"
             % (summary["iters"], ", ".join(map(str, summary["seeds"]))), "",
             "| loss | param_str | mAP | CF1 | OF1 | predicted |",
             "| --- | --- | ---: | ---: | ---: | --- |"]
    for loss, r in summary["losses"].items():
        params = ", ".join("%s %s" % item for item in r["params"].items()) or "defaults"
        lines.append("| %s | %s | %s | %s |" % (loss, params, " | ".join(
            "%.4f ± %.4f" % (r["mean"][m], r["sd"][m]) for m in METRICS), r["predicted"]))
    return "\n".join(lines) + "\n"


def plot(summary, path):
    """Bars of 1 - metric (from zero, so that their lengths compare), sd as error bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    losses = list(summary["losses"])
    fig, axes = plt.subplots(1, len(METRICS), figsize=(11, 3.8))
    for ax, m in zip(axes, METRICS):
        mean = [summary["losses"][l]["mean"][m] for l in losses]
        sd = [summary["losses"][l]["sd"][m] for l in losses]
        bars = ax.bar(range(len(losses)), [1 - v for v in mean], yerr=sd, capsize=4,
                      color=["C%d" % i for i in range(len(losses))])
        for bar, v in zip(bars, mean):
            ax.annotate("%.4f" % v, (bar.get_x() + bar.get_width() / 2, 0), xytext=(0, 2),
                        textcoords="offset points", ha="center", va="bottom", fontsize=7, color="white")
        ax.set_xticks(range(len(losses)))
        ax.set_xticklabels([l.replace("Loss", "") for l in losses], rotation=30, ha="right")
        ax.set_title("1 - test %s (lower is better)" % LABELS[m])
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("%d iterations, mean and sd over %d seeds (on each bar: the metric itself)"
                 % (summary["iters"], len(summary["seeds"])))
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


if __name__ == "__main__":
    main()
