"""A multi-label image data set from the handwritten digits that ship with scikit-learn.

Each sample is a 24 x 24 canvas: a 3 x 3 grid of 8 x 8 cells, 1 to 3 of which hold
a digit of a different class (placed in random cells, with a random shift of up to
one pixel); the labels are the set of digits present (10 classes, multi-hot).
The source digits are split first, so the train and test canvases share no digit
image. Fixed seed: every run writes the same files. Written as HDF5 for Caffe's
HDF5Data layer ("data": N x 1 x 24 x 24 in [0, 1], "label": N x 10).

With --images it also writes the same canvases as gray PNG files (round(255 x), so
scale 1/255 gives them back within 1/510) with a list file per split for
MultiLabelImageData: OUT_DIR/images/train/00000.png ... and OUT_DIR/images/train.txt,
one "train/00000.png 3 7" line per canvas (the path from OUT_DIR/images/, then the
digits present).

Usage: python3 make_data.py [OUT_DIR] [--train N] [--test N] [--images]
"""
import argparse
import os

import h5py
import numpy as np
from sklearn.datasets import load_digits

SIDE = 24


def split_sources(images, targets, rng, test_fraction=0.3):
    """Indices of train and test source digits, disjoint, stratified by class."""
    train, test = [], []
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(targets == c))
        cut = int(round(len(idx) * test_fraction))
        test.extend(idx[:cut])
        train.extend(idx[cut:])
    return np.array(train), np.array(test)


def make_canvases(images, targets, sources, n, rng):
    by_class = [sources[targets[sources] == c] for c in range(10)]
    data = np.zeros((n, 1, SIDE, SIDE), dtype=np.float32)
    labels = np.zeros((n, 10), dtype=np.float32)
    for i in range(n):
        k = rng.integers(1, 4)
        classes = rng.choice(10, size=k, replace=False)
        cells = rng.choice(9, size=k, replace=False)
        for c, cell in zip(classes, cells):
            digit = images[rng.choice(by_class[c])]
            row, col = divmod(cell, 3)
            dy, dx = rng.integers(-1, 2, size=2)
            y0 = min(max(row * 8 + dy, 0), SIDE - 8)
            x0 = min(max(col * 8 + dx, 0), SIDE - 8)
            patch = data[i, 0, y0:y0 + 8, x0:x0 + 8]
            np.maximum(patch, digit, out=patch)
            labels[i, c] = 1
    return data, labels


def write(path, data, labels):
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=data, compression="gzip")
        f.create_dataset("label", data=labels)
    with open(os.path.splitext(path)[0] + ".txt", "w") as f:
        f.write(os.path.abspath(path) + "\n")


def write_images(folder, name, data, labels):
    """Gray PNG files of the canvases and their list, for MultiLabelImageData."""
    import cv2
    os.makedirs(os.path.join(folder, name), exist_ok=True)
    pixels = np.rint(data[:, 0] * 255).astype(np.uint8)
    with open(os.path.join(folder, name + ".txt"), "w") as f:
        for i, (image, row) in enumerate(zip(pixels, labels)):
            path = "%s/%05d.png" % (name, i)
            cv2.imwrite(os.path.join(folder, path), image)
            f.write(" ".join([path] + [str(c) for c in np.flatnonzero(row)]) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", nargs="?", default="examples/digits_multilabel/data")
    parser.add_argument("--train", type=int, default=6000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--images", action="store_true",
                        help="also PNG files and list files, in OUT_DIR/images/")
    args = parser.parse_args()
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    rng = np.random.default_rng(2024)
    train_src, test_src = split_sources(images, digits.target, rng)
    os.makedirs(args.out, exist_ok=True)
    for name, sources, n in (("train", train_src, args.train), ("test", test_src, args.test)):
        data, labels = make_canvases(images, digits.target, sources, n, rng)
        write(os.path.join(args.out, name + ".h5"), data, labels)
        if args.images:
            write_images(os.path.join(args.out, "images"), name, data, labels)
        print("wrote %s/%s.h5: %d canvases from %d source digits, %.2f digits per canvas"
              % (args.out, name, n, len(sources), labels.sum(1).mean()))


if __name__ == "__main__":
    main()
