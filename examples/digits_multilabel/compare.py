"""Train the digits net with three losses for the same iterations and compare test metrics.

    python3 examples/digits_multilabel/compare.py [--iters 1500]     (or: make compare)

For each of MultiLabelSoftmaxLoss, SigmoidCrossEntropyLoss and SigmoidFocalLoss, the loss
layer of prototxt/digits_multilabel/train_val.prototxt is swapped with the prototxt tool (caffe_losses.cli.swap),
the net is trained by caffe_losses.train in a process of its own (same solver, same
seed), and the test metrics are gathered. Writes output/compare/compare.{md,json,png}.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
NETS = os.path.join(REPO, "prototxt", "digits_multilabel")
sys.path.insert(0, REPO)

from caffe_losses import cli  # noqa: E402

LOSSES = [
    ("MultiLabelSoftmaxLoss", {"normalization": "batch_size"}),
    ("SigmoidCrossEntropyLoss", {}),
    ("SigmoidFocalLoss", {}),
]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=1500)
    parser.add_argument("--out", default=os.path.join(HERE, "output", "compare"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if not os.path.exists(os.path.join(HERE, "data", "train.txt")):
        subprocess.run([sys.executable, os.path.join(HERE, "make_data.py"), os.path.join(HERE, "data")],
                       check=True)
    solver_text = open(os.path.join(NETS, "solver.prototxt")).read()
    results = {}
    for loss, params in LOSSES:
        folder = os.path.join(args.out, loss)
        os.makedirs(folder, exist_ok=True)
        net = cli.read_net(os.path.join(NETS, "train_val.prototxt"))
        cli.swap(net, loss, "loss", params)
        net_path = os.path.join(folder, "train_val.prototxt")
        with open(net_path, "w") as f:
            f.write(cli.net_text(net))
        solver = os.path.join(folder, "solver.prototxt")
        with open(solver, "w") as f:
            f.write(solver_text.replace('net: "prototxt/digits_multilabel/train_val.prototxt"', 'net: "%s"' % net_path)
                    .replace('snapshot_prefix: "examples/digits_multilabel/output/digits"',
                             'snapshot_prefix: "%s/digits"' % folder)
                    .replace("max_iter: 1500", "max_iter: %d" % args.iters))
        print("== %s" % loss, flush=True)
        subprocess.run([sys.executable, "-m", "caffe_losses.train", "--solver", solver, "--quiet"],
                       cwd=REPO, check=True, env=dict(os.environ, GLOG_minloglevel="2",
                                                      PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", "")))
        with open(os.path.join(folder, "curves.json")) as f:
            results[loss] = json.load(f)["test"]
    with open(os.path.join(args.out, "compare.json"), "w") as f:
        json.dump(results, f, indent=1)
    lines = ["Test metrics after %d iterations (1,000 held-out canvases; chance mAP about 0.2):" % args.iters, "",
             "| loss | mAP | F1@k | precision@k | recall@k |", "| --- | ---: | ---: | ---: | ---: |"]
    for loss, rows in results.items():
        last = rows[-1]
        lines.append("| %s | %.4f | %.4f | %.4f | %.4f |" % (loss, last["map"], last["f1"], last["precision"],
                                                           last["recall"]))
    table = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "compare.md"), "w") as f:
        f.write(table)
    print(table)
    plot(results, os.path.join(args.out, "compare.png"))
    print("wrote %s/compare.{md,json,png}" % args.out)


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, title in zip(axes, ("map", "f1"), ("test mean AP", "test F1@k")):
        for loss, rows in results.items():
            ax.plot([r["iter"] for r in rows], [r[key] for r in rows], marker="o", label=loss)
        ax.set_xlabel("iteration")
        ax.set_title(title)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    main()
