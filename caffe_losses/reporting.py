"""What ``python3 -m caffe_losses.train`` shows and keeps: the progress bar or progress
lines, the test lines, and the curves (``curves.json``, ``curves.png``)."""
import json
import os
import time

from . import metrics


class Progress(object):
    """The training loss and the tests as a run goes, kept in ``history`` (``{"train": [(iter,
    loss)], "test": [{"iter": i, key: value}]}``).

    The loss kept is the mean over each ``window`` iterations. A tqdm bar shows it on a
    terminal; when the output is a log (or tqdm is missing) a plain line does, at the first
    window's end past each tenth of the run; ``quiet``: neither.
    """

    def __init__(self, first, last, window, quiet=False, history=None):
        self.last, self.window = last, window
        self.history = history or {"train": [], "test": []}
        self.losses = []
        self.start = time.time()
        self.bar = progress_bar(last, first, quiet)
        # without a bar (output to a log), a plain line every tenth of the run instead
        self.every = None if self.bar is not None or quiet else max(1, last // 10)
        self.shown = first

    def step(self, iteration, loss):
        """After iteration ``iteration``, whose loss was ``loss``."""
        self.losses.append(loss)
        if self.bar is not None:
            self.bar.update(1)
        if iteration % self.window == 0 or iteration == self.last:
            self.keep(iteration)

    def keep(self, iteration):
        """Keep the mean loss of the iterations since the last one kept, and show it."""
        if not self.losses:
            return
        loss = sum(self.losses) / len(self.losses)
        self.losses = []
        self.history["train"].append((iteration, loss))
        if self.bar is not None:
            self.bar.set_postfix(loss="%.4f" % loss)
        elif self.every and (iteration // self.every > self.shown // self.every or iteration == self.last):
            self.shown = iteration
            self.say("iteration %d/%d: loss %.4f (%.0f s)" % (iteration, self.last, loss, self.seconds()))

    def test(self, row, names):
        self.history["test"].append(row)
        self.say("iteration %d: %s" % (row["iter"], metrics_line(row, names)))

    def say(self, line):
        if self.bar is not None:
            self.bar.write(line)
        else:
            print(line, flush=True)

    def seconds(self):
        return time.time() - self.start

    def close(self):
        if self.bar is not None:
            self.bar.close()


def progress_bar(total, initial, quiet):
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


def earlier_history(out, iteration):
    """The curves of the run a resume continues: ``out/curves.json`` up to ``iteration``, or
    empty ones if there is none."""
    try:
        with open(os.path.join(out, "curves.json")) as f:
            earlier = json.load(f)
        return {"train": [tuple(p) for p in earlier["train"] if p[0] <= iteration],
                "test": [row for row in earlier["test"] if row["iter"] <= iteration]}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return {"train": [], "test": []}


def write_curves(history, out, names):
    """``out/curves.json`` and ``out/curves.png``; returns the path of the figure."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "curves.json"), "w") as f:
        json.dump(history, f, indent=1)
    figure = os.path.join(out, "curves.png")
    plot_curves(history, figure, names)
    return figure


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
            right.plot(iters, [row.get(key) for row in history["test"]], marker="o",
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
