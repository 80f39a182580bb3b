"""Distil the digits net into a student of a fifth of its size, and measure what it gives.

    python3 examples/digits_multilabel/distill.py [--iters 1500] [--seeds 1,2,3]    (or: make distill)
        [--temperature T] [--loss-weight W] [--out DIR]

The teacher is the digits net (prototxt/digits_multilabel/train_val.prototxt) trained as
``make demo`` trains it; the weights ``make demo`` leaves are used if they are there. The
student (student_train_val.prototxt) is that net with 8, 16 and 24 channels instead of 16,
32 and 64. ``caffe-losses distill`` puts the teacher's deploy net beside the student with a
DistillationLoss at the tool's defaults (temperature 4, the layer's; loss weight 1: as much
as the student's own loss; sigmoid, as the student's loss is). The student is then trained
with the demo's solver alone and distilled, once per seed: the seed is the solver's
random_seed and the order of the training canvases, as in compare.py, so one seed starts both
from the same weights (the teacher's layers draw no random numbers) and the same batches.
Each final student is measured on the 1,000 held-out canvases. Writes
output/distill/distill.{md,json}.
"""
import os
import subprocess
import sys
import time

import numpy as np

from compare import (HERE, LABELS, METRICS, NETS, REPO, make_data, measure, measured_run, options, statistics,
                     write_summary)
from caffe_losses import prototxt

LOSS = "SigmoidCrossEntropyLoss"  # the student's and the teacher's loss
TEACHER = os.path.join(HERE, "output", "digits_iter_1500.caffemodel")  # what make demo leaves
MODES = ("alone", "distilled")


def main():
    args, seeds = options(__doc__, "distill", more=tool_options)
    start = time.time()
    make_data()
    os.makedirs(args.out, exist_ok=True)
    teacher = teacher_weights()
    sizes = {"teacher": learned(os.path.join(NETS, "train_val.prototxt")),
             "student": learned(os.path.join(NETS, "student_train_val.prototxt"))}
    print("learned parameters: teacher %d, student %d (%.1f%%)" % (
        sizes["teacher"], sizes["student"], 100.0 * sizes["student"] / sizes["teacher"]), flush=True)
    net_path, weights = distill_net(args.out, teacher, args)
    nets = {"alone": prototxt.read_net(os.path.join(NETS, "student_train_val.prototxt")),
            "distilled": prototxt.read_net(net_path)}
    runs = {mode: [] for mode in MODES}
    for seed in seeds:
        for mode in MODES:
            folder = os.path.join(args.out, mode, "seed%d" % seed)
            os.makedirs(folder, exist_ok=True)
            print("== student %s, seed %d" % (mode, seed), flush=True)
            row, run = measured_run(nets[mode], folder, seed, args.iters, LOSS,
                                    weights if mode == "distilled" else None)
            runs[mode].append(row)
    summary = {"iters": run["iters"], "seeds": seeds, "parameters": sizes, "distill_net": net_path,
               "temperature": args.temperature or "4 (the tool's default)",
               "loss_weight": args.loss_weight or "1 (the tool's default)",
               "teacher": measure(os.path.join(NETS, "train_val.prototxt"), teacher, LOSS, run["test_iter"]),
               "students": {mode: statistics(runs[mode]) for mode in MODES},
               "minutes": round((time.time() - start) / 60, 1)}
    write_summary(args.out, "distill", summary, markdown(summary))
    print("wrote %s/distill.{md,json} (%.1f minutes)" % (args.out, summary["minutes"]))


def teacher_weights():
    """The trained digits net: make demo's weights, or trained now as make demo trains it."""
    if not os.path.exists(TEACHER):
        print("training the teacher as make demo does (its weights: %s)" % TEACHER, flush=True)
        subprocess.run([sys.executable, "-m", "caffe_losses.train", "--solver",
                        os.path.join(NETS, "solver.prototxt"), "--quiet"], cwd=REPO, check=True,
                       env=dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", "")))
    else:
        print("the teacher: %s (make demo's)" % TEACHER, flush=True)
    return TEACHER


def learned(net_path):
    """The number of learned parameters of a net (BatchNorm's statistics are not learned)."""
    import caffe
    net = caffe.Net(net_path, caffe.TEST)
    return int(sum(b.data.size for layer in net.layers if layer.type != "BatchNorm" for b in layer.blobs))


def tool_options(parser):
    """--temperature and --loss-weight, handed to caffe-losses distill (default: the tool's)."""
    for flag in ("--temperature", "--loss-weight"):
        parser.add_argument(flag, help="caffe-losses distill's %s (default: the tool's)" % flag)


def distill_net(out, teacher, args):
    """The distillation net and the teacher's renamed weights, made by the command a user runs."""
    net_path, weights = os.path.join(out, "distill_train_val.prototxt"), os.path.join(out, "teacher.caffemodel")
    command = [sys.executable, "-m", "caffe_losses", "distill", os.path.join(NETS, "student_train_val.prototxt"),
               os.path.join(NETS, "deploy.prototxt"), teacher, "-o", net_path, "--weights-out", weights]
    command += [x for flag, value in (("--temperature", args.temperature), ("--loss-weight", args.loss_weight))
                if value is not None for x in (flag, value)]
    print("$ caffe-losses distill " + " ".join(os.path.relpath(a, REPO) for a in command[4:]), flush=True)
    subprocess.run(command, cwd=REPO, check=True)
    return net_path, weights


def verdict(summary, metric):
    """Which student is better on ``metric``, by how much, and how consistently over the seeds."""
    alone, distilled = ([r[metric] for r in summary["students"][m]["runs"]] for m in MODES)
    diff = np.subtract(distilled, alone)
    teacher = summary["teacher"][metric]
    seeds = ", ".join("%+.4f" % d for d in diff)
    if np.all(diff > 0) or np.all(diff < 0):
        word = "better" if diff[0] > 0 else "worse"
        text = "distilled is %s on every seed: %+.4f on average (seed by seed %s)" % (word, diff.mean(), seeds)
    else:
        text = ("no consistent difference: distilled - alone is %s seed by seed (%+.4f on average)"
                % (seeds, diff.mean()))
    gap = teacher - np.mean(alone)
    if gap > 0:
        text += "; the student alone is %.4f below the teacher (%.4f), distillation closes %.0f%% of that" % (
            gap, teacher, 100 * diff.mean() / gap)
    return "%s: %s" % (LABELS[metric], text)


def markdown(summary):
    sizes = summary["parameters"]
    lines = ["Student (%d learned parameters, %.0f%% of the teacher's %d) after %d iterations, mean ± sd "
             "over seeds %s, on the 1,000 held-out canvases:" % (
                 sizes["student"], 100.0 * sizes["student"] / sizes["teacher"], sizes["teacher"],
                 summary["iters"], ", ".join(map(str, summary["seeds"]))),
             "distillation at temperature %s, loss weight %s." % (summary["temperature"], summary["loss_weight"]), "",
             "| net | mAP | CF1 | OF1 |", "| --- | ---: | ---: | ---: |",
             "| teacher (trained as make demo trains it) | %s |" % " | ".join("%.4f" % summary["teacher"][m] for m in METRICS)]
    for mode in MODES:
        r = summary["students"][mode]
        lines.append("| student, %s | %s |" % (mode, " | ".join("%.4f ± %.4f" % (r["mean"][m], r["sd"][m])
                                                               for m in METRICS)))
    lines += [""] + ["* " + verdict(summary, m) for m in METRICS]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
