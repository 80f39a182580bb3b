"""Check a MultiLabelImageData list file before a day of training: every line, every image.

    caffe-losses check-list LIST --num-classes C [--labels sparse|dense] [--root-folder DIR/]
                            [--crop-size N] [--new-height H --new-width W] [--gray] [--jobs N]
    python3 -m caffe_losses.data.check_list train.txt --num-classes 20 --root-folder images/

The keys are the layer's own ``param_str`` keys, checked by its own rules (the same
parser, the same list reader, the same image reader: one implementation, so a list that
passes here passes in the layer). Each image is decoded once, ``--jobs`` at a time
(OpenCV lets go of Python's lock while it decodes). Prints ``file:line: problem`` for each
line the layer would stop at: a bad label, a missing or undecodable image, a folder, a
JPEG or PNG cut short, an image smaller than ``crop_size``, an image of another size than
the first when nothing resizes or crops. Progress goes to stderr: a bar on a terminal
(tqdm), a line every tenth otherwise. Exit status 0 when every line is usable, 1 when
any is not, 2 for a bad command line.
"""
import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from .layer import LAYERS
from .listfile import ImageList
from .recipe import BatchRecipe
from .transform import Transform

PROG = "python3 -m caffe_losses.data.check_list"
ROW = LAYERS[0]
CHUNK = 64  # images per thread handed out at a time


class Progress(object):
    """A tqdm bar on a terminal, else a line to stderr every tenth of the images;
    ``say(line)`` prints a problem to stdout without breaking the bar."""

    def __init__(self, total):
        self.total, self.done, self.bar = total, 0, None
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        if tqdm is not None:
            # disable=None: off when stderr is not a terminal, where each redraw is a log line
            self.bar = tqdm(total=total, unit="image", dynamic_ncols=True, disable=None)
            if self.bar.disable:
                self.bar = None
        self.step = max(1, total // 10)

    def say(self, line):
        if self.bar is not None:
            self.bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def update(self, count, problems):
        before, self.done = self.done, self.done + count
        if self.bar is not None:
            self.bar.update(count)
        elif self.done // self.step > before // self.step or self.done == self.total:
            sys.stderr.write("checked %d of %d images, %d problems\n" % (self.done, self.total,
                                                                          problems))
            sys.stderr.flush()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def line_text(exc):
    """``file:line: problem`` for a line error of the layer."""
    return "%s:%d: %s" % (exc.source, exc.line, exc.problem)


def check_images(recipe, jobs, progress):
    """Read every image of the recipe's list, as the layer does; the number of problems."""
    problems = 0

    def read(i):
        try:
            return recipe.read(i), None
        except ValueError as exc:
            return None, exc

    first = 0  # the data top's size comes from the first image (the layer stops at a bad one)
    while first < len(recipe.images) and recipe.image_shape is None:
        image, exc = read(first)
        if exc is None:
            recipe.image_shape = image.shape[:2]
        else:
            problems += 1
            progress.say(line_text(exc))
        first += 1
    progress.update(first, problems)
    with ThreadPoolExecutor(jobs) as pool:
        for start in range(first, len(recipe.images), CHUNK * jobs):
            chunk = range(start, min(start + CHUNK * jobs, len(recipe.images)))
            for _, exc in pool.map(read, chunk):
                if exc is not None:
                    problems += 1
                    progress.say(line_text(exc))
            progress.update(len(chunk), problems)
    return problems


def arguments(prog):
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    parser.add_argument("source", metavar="LIST", help="the list file (the layer's source)")
    parser.add_argument("--num-classes", type=int, required=True, help="the label top's width")
    parser.add_argument("--labels", choices=("sparse", "dense"), default="sparse",
                        help="class indices (default) or one number per class")
    parser.add_argument("--root-folder", default="", help="prefix of every path, joined as written")
    parser.add_argument("--crop-size", type=int, default=0, help="square crop side (0: no crop)")
    parser.add_argument("--new-height", type=int, default=0, help="resize height (0: no resize)")
    parser.add_argument("--new-width", type=int, default=0, help="resize width (0: no resize)")
    parser.add_argument("--gray", action="store_true", help="is_color: False (decode as gray)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="images decoded at a time (default: one per CPU)")
    return parser


def main(argv=None, prog=PROG):
    args = arguments(prog).parse_args(argv)
    keys = dict(source=args.source, num_classes=args.num_classes, labels=args.labels,
                root_folder=args.root_folder, crop_size=args.crop_size,
                new_height=args.new_height, new_width=args.new_width, is_color=not args.gray)
    try:
        params = ROW.parse(repr(keys))
        label_problems = []
        images = ImageList(params["source"], params["num_classes"], params["labels"],
                           problems=label_problems)
        transform = Transform(params["new_height"], params["new_width"], params["crop_size"],
                              is_color=params["is_color"])
        recipe = BatchRecipe(images, transform, params["root_folder"])
        progress = Progress(len(images))
    except (ValueError, ImportError) as exc:
        sys.stderr.write("%s: %s\n" % (prog, exc))
        return 1
    for exc in label_problems:
        progress.say(line_text(exc))
    try:
        problems = len(label_problems) + check_images(recipe, max(1, args.jobs), progress)
    finally:
        progress.close()
    if problems:
        print("%s: %d of %d lines cannot be used: fix them before training"
              % (args.source, problems, len(images) + len(label_problems)))
        return 1
    print("%s: %d images, every one usable" % (args.source, len(images)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
