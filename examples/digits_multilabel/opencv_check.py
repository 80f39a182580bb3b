"""The demo's last step: run the trained net, as `caffe-losses deploy` wrote it, in OpenCV's DNN
module (cv2.dnn.readNetFromCaffe) and in Caffe on the test canvases, and compare.

Usage: python3 opencv_check.py DEPLOY.prototxt WEIGHTS.caffemodel TEST_LIST

TEST_LIST lists the HDF5 files of the test canvases (HDF5Data's source). Prints one line with
the largest difference between the two runtimes' probabilities; exit 1 if it is above
TOLERANCE.
"""
import sys

import caffe
import cv2
import h5py
import numpy as np

TOLERANCE = 1e-5
BATCH = 100


def main(deploy, weights, test_list):
    caffe.set_mode_cpu()
    with open(test_list) as f:
        files = [line.strip() for line in f if line.strip()]
    images = np.concatenate([h5py.File(name, "r")["data"][...] for name in files]).astype(np.float32)
    net = caffe.Net(deploy, weights, caffe.TEST)
    opencv = cv2.dnn.readNetFromCaffe(deploy, weights)
    largest = 0.0
    for start in range(0, len(images) - BATCH + 1, BATCH):
        batch = images[start:start + BATCH]
        net.blobs["data"].data[...] = batch
        expected = net.forward()["prob"]
        opencv.setInput(batch, "data")
        got = opencv.forward("prob").reshape(expected.shape)
        largest = max(largest, float(np.abs(got - expected).max()))
    done = len(images) // BATCH * BATCH
    print("OpenCV %s DNN ran the deploy net (caffe-losses deploy) on the %d test canvases: its "
          "probabilities differ from Caffe's by at most %.1e (tolerance %.0e)"
          % (cv2.__version__, done, largest, TOLERANCE))
    return 0 if largest <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
