"""The naive baseline: a multi-label softmax loss layer written with Python loops over
samples and classes, as such layers are usually first written. Benchmark use only."""
import math

import caffe
import numpy as np


class NaiveMultiLabelSoftmaxLoss(caffe.Layer):
    """Loss = mean over samples of -sum_c (y_c / sum y) log softmax(s)_c, for N x C blobs."""

    def setup(self, bottom, top):
        self.grad = None

    def reshape(self, bottom, top):
        top[0].reshape()
        self.grad = np.zeros(bottom[0].data.shape, dtype=np.float32)

    def forward(self, bottom, top):
        scores, labels = bottom[0].data, bottom[1].data
        n, c = scores.shape
        total = 0.0
        for i in range(n):
            top_score = max(scores[i, j] for j in range(c))
            exps = [math.exp(scores[i, j] - top_score) for j in range(c)]
            norm = sum(exps)
            label_sum = sum(labels[i, j] for j in range(c))
            for j in range(c):
                p = exps[j] / norm
                t = labels[i, j] / label_sum if label_sum > 0 else 0.0
                if t:
                    total -= t * math.log(p)
                self.grad[i, j] = ((p if label_sum > 0 else 0.0) - t) / n
        top[0].data[...] = total / n

    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = self.grad * top[0].diff.flat[0]


class NoopLayer(caffe.Layer):
    """A Python layer that does nothing: what Caffe's call into Python costs by itself."""

    def setup(self, bottom, top):
        top[0].reshape()

    def reshape(self, bottom, top):
        pass

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass
