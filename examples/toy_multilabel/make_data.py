"""Write a small synthetic multi-label data set for Caffe's HDF5Data layer.

Each sample carries 1 to 3 of 10 classes; its 32 features are the sum of
the prototypes of its classes plus noise. Fixed seed, so every run writes the
same files. Usage: python3 make_data.py OUT_DIR
"""
import os
import sys

import h5py
import numpy as np

CLASSES, FEATURES = 10, 32


def make_split(rng, prototypes, n):
    labels = np.zeros((n, CLASSES), dtype=np.float32)
    for row, k in zip(labels, rng.integers(1, 4, size=n)):
        row[rng.choice(CLASSES, size=k, replace=False)] = 1
    data = labels @ prototypes + rng.normal(0, 0.8, size=(n, FEATURES))
    return data.astype(np.float32), labels


def main(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(2018)
    prototypes = rng.normal(0, 1, size=(CLASSES, FEATURES))
    for split, n in (("train", 2048), ("test", 512)):
        data, labels = make_split(rng, prototypes, n)
        path = os.path.join(out_dir, split + ".h5")
        with h5py.File(path, "w") as f:
            f["data"] = data
            f["label"] = labels
        with open(os.path.join(out_dir, split + ".txt"), "w") as f:
            f.write(path + "\n")
        print("wrote %s: %d samples, %.2f labels per sample" % (path, n, labels.sum(1).mean()))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "examples/toy_multilabel/data")
