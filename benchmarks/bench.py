"""Time forward+backward of every loss layer in a real caffe.Net, side by side with Caffe's
C++ loss layers, a naive Python-loop layer and the numpy floor, on the same arrays.

Run inside the Caffe image:  tools/caffe-env python3 benchmarks/bench.py   (or: make bench)
Writes benchmarks/results/bench.{json,md,png}.

``--baseline REV`` (``make bench BASELINE=REV``) also times the layers of another commit,
side by side with the current ones in the same run: the Makefile extracts that commit's
package to .scratch/baseline/caffe_losses_baseline (git is not in the image), and the
tables get an ours/baseline ratio per layer.

Only the loss layer is timed (``net._forward(i, i)`` and ``net._backward(i, i)``), not the
Input layers that feed it. Every time is the median of repeated calls after warm-up, taken in
five rounds that visit every implementation in turn, so that a machine whose speed drifts during
the run changes all of them alike. The same run also records how far each layer is from its C++
counterpart (loss and gradient).
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
os.environ.setdefault("GLOG_minloglevel", "2")

import caffe  # noqa: E402

from caffe_losses import jit, table  # noqa: E402

caffe.set_mode_cpu()

SHAPES = [(32, 20), (256, 1000), (64, 21000), (8, 21, 128, 128)]
FLOOR = "floor (np.exp + copy)"
LOOP_MAX_ELEMENTS = 300000  # the naive loop takes about a second per call beyond this

BASELINE_DIR = os.path.join(os.path.dirname(HERE), ".scratch", "baseline")
BASELINE = "baseline "  # the prefix of a baseline layer's name in the tables


def counterpart(row):
    """The C++ loss layer that a row of the table is timed against."""
    if row.inputs == "probabilities":
        return "MultinomialLogisticLoss"
    return "SigmoidCrossEntropyLoss" if row.deploy == "Sigmoid" else "SoftmaxWithLoss"


# name -> (layer type, python layer or None, param_str, labels kind, input kind, C++ counterpart);
# a loss whose bottom[1] holds scores (DistillationLoss) gets a teacher's there
IMPLEMENTATIONS = [
    (row.name, "caffe_losses", "{}", "teacher" if row.labels == "scores" else row.labels,
     "probs" if row.inputs == "probabilities" else "scores", counterpart(row)) for row in table.LOSSES
] + [
    ("C++ SoftmaxWithLoss", None, "", "sparse", "scores", None),
    ("C++ SigmoidCrossEntropyLoss", None, "", "dense", "scores", None),
    ("C++ MultinomialLogisticLoss", None, "", "sparse", "probs", None),
    ("naive loop (multi-label softmax)", "naive", "", "dense", "scores", None),
    ("Python layer doing nothing", "naive", "", "dense", "scores", None),
]
PYTHON_CLASS = {"naive loop (multi-label softmax)": "NaiveMultiLabelSoftmaxLoss",
                "Python layer doing nothing": "NoopLayer"}


def make_arrays(shape, seed=0):
    rng = np.random.default_rng(seed)
    n, c, spatial = shape[0], shape[1], tuple(shape[2:])
    scores = rng.normal(0, 2, size=shape).astype(np.float32)
    classes = rng.integers(0, c, size=(n,) + spatial)
    dense = np.moveaxis(np.eye(c, dtype=np.float32)[classes], -1, 1)
    extra = rng.random(shape) < 2.0 / c  # a second positive now and then: multi-label
    dense = np.maximum(dense, extra.astype(np.float32))
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    sparse = classes.reshape((n, 1) + spatial if spatial else (n,)).astype(np.float32)
    teacher = rng.normal(0, 2, size=shape).astype(np.float32)
    return {"scores": scores, "probs": probs, "dense": dense, "sparse": sparse, "classes": classes,
            "teacher": teacher}


def input_layer(name, shape):
    return ('layer { name: "%s" type: "Input" top: "%s" input_param { shape { %s } } }\n'
            % (name, name, " ".join("dim: %d" % d for d in shape)))


def build_net(name, module, param_str, labels_kind, input_kind, arrays):
    scores, labels = arrays[input_kind], arrays[labels_kind]
    if name == "C++ SoftmaxWithLoss" or name == "C++ MultinomialLogisticLoss":
        labels = arrays["sparse"]
    text = "force_backward: true\n" + input_layer("score", scores.shape) + input_layer("label", labels.shape)
    if module is None:
        text += ('layer { name: "loss" type: "%s" bottom: "score" bottom: "label" top: "loss" }\n'
                 % name.split()[-1])
    else:
        layer = PYTHON_CLASS.get(name, name[len(BASELINE):] if name.startswith(BASELINE) else name)
        text += ('layer { name: "loss" type: "Python" bottom: "score" bottom: "label" top: "loss"\n'
                 '  loss_weight: 1 python_param { module: "%s" layer: "%s" param_str: "%s" } }\n'
                 % (module, layer, param_str))
    fd, path = tempfile.mkstemp(suffix=".prototxt")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    net = caffe.Net(path, caffe.TRAIN)
    os.remove(path)
    net.blobs["score"].data[...] = scores
    net.blobs["label"].data[...] = labels
    return net


def applicable(name, labels_kind, input_kind, shape):
    if name == "C++ MultinomialLogisticLoss" and len(shape) > 2:
        return False  # it takes one label per sample only
    if name.startswith("naive") and (len(shape) > 2 or np.prod(shape) > LOOP_MAX_ELEMENTS):
        return False
    return True


def median_times(fns, budget=0.6, min_reps=5, max_reps=300, rounds=5):
    """Median seconds per call of each function, timed in rounds.

    Each round gives every function one untimed warm-up call and then a run of
    timed calls, so that calls are timed with warm caches (the repetitions
    after warm-up) while a machine whose speed drifts during the benchmark
    changes every implementation alike. Repetitions per function: what fits in
    ``budget`` seconds, within [min_reps, max_reps], spread over the rounds.
    Returns {name: (median, repetitions)}.
    """
    per_round, times = {}, {}
    for name, fn in fns.items():
        for _ in range(3):
            fn()
        start = time.perf_counter()
        fn()
        single = time.perf_counter() - start
        reps = int(min(max_reps, max(min_reps, budget / max(single, 1e-6))))
        per_round[name] = max(1, -(-reps // rounds))
        times[name] = []
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()
            for _ in range(per_round[name]):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    return {name: (float(np.median(t)), len(t)) for name, t in times.items()}


def floor_fn(scores):
    """np.exp plus one copy of the scores: no softmax can do less work."""
    a = np.empty_like(scores)
    b = np.empty_like(scores)

    def run():
        np.exp(scores, out=a)
        np.copyto(b, a)
    return run


def layer_fn(net):
    i = list(net._layer_names).index("loss")

    def run():
        net._forward(i, i)
        net._backward(i, i)
    return run


def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


MEMORY_SHAPE = (256, 1000)


def memory_series(name, iterations):
    """Resident memory every 1,000 forward+backward calls of one layer (in this process)."""
    for layer, module, param_str, labels_kind, input_kind, _ in IMPLEMENTATIONS:
        if layer == name:
            run = layer_fn(build_net(name, module, param_str, labels_kind, input_kind,
                                     make_arrays(MEMORY_SHAPE)))
    series = []
    for _ in range(iterations // 1000):
        for _ in range(1000):
            run()
        series.append(resident_mb())
    return series


def memory_run(iterations):
    """Each of our layers in a fresh process, so that one layer's memory is not another's."""
    rows = {}
    for name, module, _, _, _, _ in IMPLEMENTATIONS:
        if module != "caffe_losses":
            continue
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--memory-layer", name,
                              "--memory-iterations", str(iterations)],
                             stdout=subprocess.PIPE, universal_newlines=True, check=True).stdout
        series = json.loads(out.strip().splitlines()[-1])
        rows[name] = {"after_1000_mb": series[0], "after_all_mb": series[-1],
                      "max_growth_mb": max(series) - series[0], "series_mb": series}
        print("memory %-26s %.1f MB after 1,000 calls; then %s" % (
            name, series[0], " ".join("%+.1f" % (v - series[0]) for v in series[1:])), flush=True)
    return rows


def reference_loss(name, shape, arrays):
    """The loss in float64, written plainly, for the parity table (default normalizations)."""
    x = arrays["scores"].astype(np.float64)
    if name == "SigmoidCrossEntropyLoss":  # batch_size
        y = arrays["dense"].astype(np.float64)
        return (np.maximum(x, 0) - x * y + np.log1p(np.exp(-np.abs(x)))).sum() / shape[0]
    if name == "SoftmaxCrossEntropyLoss":  # valid: every location
        m = x.max(axis=1, keepdims=True)
        logp = x - m - np.log(np.exp(x - m).sum(axis=1, keepdims=True))
        picked = np.take_along_axis(logp, arrays["classes"][:, None], axis=1)
        return -picked.mean()
    p = arrays["probs"].astype(np.float64)  # CrossEntropyLoss / MultinomialLogisticLoss: batch_size
    return -np.log(np.take_along_axis(p, arrays["classes"][:, None], axis=1)).sum() / shape[0]


def relative(ours, theirs):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    return float(np.max(np.abs(ours - theirs)) / max(np.max(np.abs(theirs)), 1e-30))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    parser.add_argument("--quick", action="store_true", help="the two smallest shapes only")
    parser.add_argument("--shapes", help="only these shapes, e.g. 32x20,8x21x128x128")
    parser.add_argument("--memory-iterations", type=int, default=10000,
                        help="forward+backward calls per layer at 256x1000 for the memory check (0: none)")
    parser.add_argument("--memory-layer", help=argparse.SUPPRESS)  # one layer's series, as JSON
    parser.add_argument("--baseline", metavar="REV",
                        help="also time the layers of commit REV (make bench BASELINE=REV "
                             "extracts its package first)")
    args = parser.parse_args()
    if args.baseline:
        add_baseline(args.baseline)
    if args.memory_layer:
        print(json.dumps(memory_series(args.memory_layer, args.memory_iterations)))
        return
    shapes = SHAPES[:2] if args.quick else SHAPES
    if args.shapes:
        shapes = [tuple(int(d) for d in key.split("x")) for key in args.shapes.split(",")]
    results = {"machine": {"python": platform.python_version(), "numpy": np.__version__,
                           "caffe": caffe.__version__, "cpus": os.cpu_count(),
                           "numba": jit.numba.__version__ if jit.ENABLED else None,
                           "processor": platform.processor() or platform.machine()},
               "shapes": [list(s) for s in shapes], "times_ms": {}, "parity": {},
               "baseline": args.baseline}
    for shape in shapes:
        key = "x".join(map(str, shape))
        arrays = make_arrays(shape)
        times = results["times_ms"].setdefault(key, {})
        nets, fns = {}, {}
        for name, module, param_str, labels_kind, input_kind, _ in IMPLEMENTATIONS:
            if not applicable(name, labels_kind, input_kind, shape):
                continue
            nets[name] = build_net(name, module, param_str, labels_kind, input_kind, arrays)
            fns[name] = layer_fn(nets[name])
        fns[FLOOR] = floor_fn(arrays["scores"])
        for name, (t, reps) in median_times(fns).items():
            times[name] = t * 1e3
            print("%-16s %-34s %9.3f ms  (median of %d)" % (key, name, t * 1e3, reps), flush=True)
        parity = results["parity"].setdefault(key, {})
        for ours, theirs in (("SoftmaxCrossEntropyLoss", "C++ SoftmaxWithLoss"),
                             ("SigmoidCrossEntropyLoss", "C++ SigmoidCrossEntropyLoss"),
                             ("CrossEntropyLoss", "C++ MultinomialLogisticLoss")):
            if ours in nets and theirs in nets:
                a, b = nets[ours], nets[theirs]
                if ours == "CrossEntropyLoss":  # one-hot targets for MultinomialLogisticLoss
                    onehot = np.eye(shape[1], dtype=np.float32)[arrays["classes"]]
                    a.blobs["label"].data[...] = onehot
                for net in (a, b):
                    net.forward()
                    net.backward()
                ref = reference_loss(ours, shape, arrays)
                parity[ours] = {"loss": relative(a.blobs["loss"].data, b.blobs["loss"].data),
                                "gradient": relative(a.blobs["score"].diff, b.blobs["score"].diff),
                                "ours_vs_float64": relative(a.blobs["loss"].data, ref),
                                "cpp_vs_float64": relative(b.blobs["loss"].data, ref)}
    if args.memory_iterations:
        results["memory_256x1000"] = memory_run(args.memory_iterations)
        results["memory_iterations"] = args.memory_iterations
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench.json"), "w") as f:
        json.dump(results, f, indent=1)
    table = markdown(results)
    with open(os.path.join(args.out, "bench.md"), "w") as f:
        f.write(table)
    print()
    print(table)
    plot(results, os.path.join(args.out, "bench.png"))
    print("wrote %s/bench.{json,md,png}" % args.out)


def add_baseline(rev):
    """Time the layers of ``rev`` too, from the package the Makefile extracted."""
    if not os.path.isdir(os.path.join(BASELINE_DIR, "caffe_losses_baseline")):
        sys.exit("bench: no baseline package in %s; run `make bench BASELINE=%s`, which "
                 "extracts it with git" % (BASELINE_DIR, rev))
    sys.path.insert(0, BASELINE_DIR)
    import caffe_losses_baseline as old
    rows = [impl for impl in IMPLEMENTATIONS if impl[1] == "caffe_losses"]
    IMPLEMENTATIONS[len(rows):len(rows)] = [
        (BASELINE + name, "caffe_losses_baseline") + tuple(rest)
        for name, _, *rest in rows if hasattr(old, name)]


def markdown(results):
    counterpart = {name: cpp for name, _, _, _, _, cpp in IMPLEMENTATIONS if cpp}
    lines = ["Forward+backward of the loss layer alone, median ms (Caffe %s, numpy %s, Python %s, "
             "%d CPUs; numba %s)."
             % (results["machine"]["caffe"], results["machine"]["numpy"],
                results["machine"]["python"], results["machine"]["cpus"],
                results["machine"].get("numba") or "not installed"), ""]
    keys = list(results["times_ms"])
    lines.append("| implementation | " + " | ".join(keys) + " |")
    lines.append("| --- |" + " ---: |" * len(keys))
    names = []
    for k in keys:
        names += [n for n in results["times_ms"][k] if n not in names]
    for name in names:
        row = [results["times_ms"][k].get(name) for k in keys]
        lines.append("| %s | %s |" % (name, " | ".join("%.3f" % v if v is not None else "—" for v in row)))
    lines += ["", "Ratios (lower is better for ours/C++ and ours/floor; higher is better for loop/ours):", ""]
    lines.append("| layer | ratio | " + " | ".join(keys) + " |")
    lines.append("| --- | --- |" + " ---: |" * len(keys))
    for name, cpp in counterpart.items():
        if name.startswith(BASELINE):
            continue
        ratios = [("ours/C++ " + cpp, name, "C++ " + cpp), ("ours/floor", name, FLOOR)]
        if results.get("baseline"):
            ratios.append(("ours/baseline %s" % results["baseline"], name, BASELINE + name))
        for label, num, den in ratios:
            cells = []
            for k in keys:
                t = results["times_ms"][k]
                cells.append("%.2f" % (t[num] / t[den]) if num in t and den in t else "—")
            lines.append("| %s | %s | %s |" % (name, label, " | ".join(cells)))
    loop = "naive loop (multi-label softmax)"
    cells = []
    for k in keys:
        t = results["times_ms"][k]
        cells.append("%.0f" % (t[loop] / t["MultiLabelSoftmaxLoss"]) if loop in t else "—")
    lines.append("| MultiLabelSoftmaxLoss | loop/ours | %s |" % " | ".join(cells))
    lines += ["", "Largest difference from the C++ layer on the same arrays, relative to the largest "
              "C++ value; and each loss value against a plain float64 computation:", "",
              "| layer | shape | loss | gradient | ours vs float64 | C++ vs float64 |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    for k, entries in results["parity"].items():
        for name, d in entries.items():
            lines.append("| %s | %s | %.1e | %.1e | %.1e | %.1e |" % (
                name, k, d["loss"], d["gradient"], d["ours_vs_float64"], d["cpp_vs_float64"]))
    if "memory_256x1000" in results:
        lines += ["", "Resident memory over %d forward+backward calls at 256x1000, each layer in a "
                  "process of its own (read every 1,000 calls):" % results["memory_iterations"],
                  "", "| layer | after 1,000 calls | largest growth after that | after the last call |",
                  "| --- | ---: | ---: | ---: |"]
        for name, row in results["memory_256x1000"].items():
            lines.append("| %s | %.1f MB | %+.1f MB | %.1f MB |" % (
                name, row["after_1000_mb"], row["max_growth_mb"], row["after_all_mb"]))
    return "\n".join(lines) + "\n"


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    keys = list(results["times_ms"])
    elements = [int(np.prod(s)) for s in results["shapes"]]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.set_prop_cycle(color=plt.get_cmap("tab20").colors[::2] + plt.get_cmap("tab20").colors[1::2])
    names = []
    for k in keys:
        names += [n for n in results["times_ms"][k] if n not in names]
    for name in names:
        xs = [e for e, k in zip(elements, keys) if name in results["times_ms"][k]]
        ys = [results["times_ms"][k][name] for k in keys if name in results["times_ms"][k]]
        style = "--" if name.startswith("C++") else (":" if "loop" in name or "floor" in name else "-")
        ax.loglog(xs, ys, style, marker="o", label=name)
    ax.set_xlabel("elements in the scores blob")
    ax.set_ylabel("forward + backward, ms (median)")
    ax.set_title("Loss layers in Caffe on CPU: time versus size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


if __name__ == "__main__":
    main()
