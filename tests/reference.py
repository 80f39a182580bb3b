"""Plain, loop-based float64 references written from the formulas.

Deliberately slow and obvious: no vectorization, no shared code with the
package, so that a wrong formula in the package shows up as a difference.
"""
import math


def softmax_row(scores):
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    total = sum(exps)
    return [e / total for e in exps]


def locations(shape):
    """Yield (n, spatial index tuple) for a shape (N, C, *spatial)."""
    import itertools
    spatial = shape[2:]
    for n in range(shape[0]):
        for rest in itertools.product(*[range(d) for d in spatial]):
            yield n, rest


def location_weight(weights, n, rest):
    """weights: None, per sample (N,) or per location (N, *spatial)."""
    if weights is None:
        return 1.0
    if weights.ndim == 1:
        return float(weights[n])
    return float(weights[(n,) + rest])


def multilabel_softmax_loss(scores, labels, weights=None, target="sum", normalization="batch_size"):
    """Reference for class axis 1. weights: None, per sample (N,) or per location (N, *spatial)."""
    shape = scores.shape
    total = 0.0
    valid = 0.0
    n_locations = 0
    for n, rest in locations(shape):
        n_locations += 1
        s = [float(scores[(n, c) + rest]) for c in range(shape[1])]
        y = [float(labels[(n, c) + rest]) for c in range(shape[1])]
        w = location_weight(weights, n, rest)
        if target == "sum":
            denom = sum(y)
        else:
            denom = float(sum(1 for v in y if v != 0))
        if denom <= 0:
            continue
        valid += w
        p = softmax_row(s)
        total += w * -sum((yc / denom) * math.log(pc) for yc, pc in zip(y, p))
    z = {"full": n_locations, "valid": valid, "batch_size": shape[0], "none": 1}[normalization]
    return total / max(1.0, z)


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def _element_weight(weights, n, c, rest):
    """weights: None, per location (N, *spatial) or per element (N, C, *spatial)."""
    if weights is None:
        return 1.0
    if weights.ndim == 1 + len(rest):
        return float(weights[(n,) + rest])
    return float(weights[(n, c) + rest])


def _per_class(value, c):
    if value is None:
        return 1.0
    if isinstance(value, (int, float)):
        return float(value)
    return float(value[c])


def sigmoid_focal_loss(scores, labels, weights=None, ignore_label=None, gamma=2.0, alpha=0.25,
                       pos_weight=None, class_weight=None, normalization="batch_size"):
    """Reference element-wise focal loss (gamma=0, alpha=None: binary cross-entropy)."""
    shape = scores.shape
    total = 0.0
    valid = 0.0
    positives = 0.0
    elements = 0
    for n, rest in locations(shape):
        for c in range(shape[1]):
            elements += 1
            x = float(scores[(n, c) + rest])
            y = float(labels[(n, c) + rest])
            if ignore_label is not None and y == ignore_label:
                continue
            w = _element_weight(weights, n, c, rest)
            valid += w
            positives += w * y
            p = sigmoid(x)
            r = _per_class(pos_weight, c)
            ce = -(r * y * math.log(p) + (1 - y) * math.log(1 - p))
            p_t = p * y + (1 - p) * (1 - y)
            a_t = 1.0 if alpha is None else alpha * y + (1 - alpha) * (1 - y)
            total += w * _per_class(class_weight, c) * a_t * (1 - p_t) ** gamma * ce
    z = {"full": elements, "valid": valid, "batch_size": shape[0], "none": 1,
         "positive": positives}[normalization]
    return total / max(1.0, z)


def softmax_focal_loss(scores, labels, weights=None, ignore_label=None, gamma=0.0, alpha=None,
                       class_weight=None, label_smoothing=0.0, normalization="valid"):
    """Reference sparse-label softmax loss: focal (gamma, alpha) or cross-entropy
    (gamma=0, with class_weight and label_smoothing as PyTorch's CrossEntropyLoss).
    labels: (N, *spatial) class indices; weights: None, (N,) or (N, *spatial)."""
    shape = scores.shape
    classes = shape[1]
    total = 0.0
    valid = 0.0
    count = 0
    for n, rest in locations(shape):
        count += 1
        y = labels[(n,) + rest]
        if ignore_label is not None and y == ignore_label:
            continue
        y = int(y)
        w = location_weight(weights, n, rest)
        p = softmax_row([float(scores[(n, c) + rest]) for c in range(classes)])
        a_y = _per_class(class_weight, y)
        valid += w * a_y
        if gamma or alpha is not None:
            total += w * _per_class(alpha, y) * -(1 - p[y]) ** gamma * math.log(p[y])
        else:
            smooth = sum(_per_class(class_weight, c) * -math.log(p[c]) for c in range(classes))
            total += w * ((1 - label_smoothing) * a_y * -math.log(p[y])
                          + label_smoothing / classes * smooth)
    z = {"full": count, "valid": valid, "batch_size": shape[0], "none": 1}[normalization]
    return total / max(1.0, z)


def cross_entropy_binary(probs, labels, eps=1e-7, ignore_label=None, normalization="batch_size"):
    shape = probs.shape
    total, valid, elements = 0.0, 0, 0
    for n, rest in locations(shape):
        for c in range(shape[1]):
            elements += 1
            y = float(labels[(n, c) + rest])
            if ignore_label is not None and y == ignore_label:
                continue
            valid += 1
            p = min(max(float(probs[(n, c) + rest]), eps), 1 - eps)
            total += -(y * math.log(p) + (1 - y) * math.log(1 - p))
    z = {"full": elements, "valid": valid, "batch_size": shape[0], "none": 1}[normalization]
    return total / max(1.0, z)


def cross_entropy_categorical(probs, labels, eps=1e-20, target="sum", normalization="batch_size"):
    shape = probs.shape
    total, valid, count = 0.0, 0, 0
    for n, rest in locations(shape):
        count += 1
        y = [float(labels[(n, c) + rest]) for c in range(shape[1])]
        denom = sum(y) if target == "sum" else float(sum(1 for v in y if v))
        if denom <= 0:
            continue
        valid += 1
        for c in range(shape[1]):
            p = max(float(probs[(n, c) + rest]), eps)
            total += -(y[c] / denom) * math.log(p)
    z = {"full": count, "valid": valid, "batch_size": shape[0], "none": 1}[normalization]
    return total / max(1.0, z)


def asymmetric_loss(scores, labels, weights=None, gamma_pos=0.0, gamma_neg=4.0, clip=0.05,
                    ignore_label=None, class_weight=None, normalization="batch_size"):
    """Reference AsymmetricLoss (Ben-Baruch et al. 2021), element by element:
    -a_c [y (1-p)^g+ log p + (1-y) p_m^g- log(1-p_m)], p_m = max(p - clip, 0)."""
    shape = scores.shape
    total = valid = positives = 0.0
    elements = 0
    for n, rest in locations(shape):
        for c in range(shape[1]):
            elements += 1
            x = float(scores[(n, c) + rest])
            y = float(labels[(n, c) + rest])
            if ignore_label is not None and y == ignore_label:
                continue
            w = _element_weight(weights, n, c, rest)
            valid += w
            positives += w * y
            # log p and log(1 - p) written so that |x| = 1e4 stays finite
            log_p = -math.log1p(math.exp(-x)) if x >= 0 else x - math.log1p(math.exp(x))
            log_q = -x - math.log1p(math.exp(-x)) if x >= 0 else -math.log1p(math.exp(x))
            p, q = math.exp(log_p), math.exp(log_q)
            p_m = max(p - clip, 0.0)
            log_1m_pm = log_q if clip == 0 else math.log(1 - p_m)  # 1 - p_m >= clip
            loss = -(y * q ** gamma_pos * log_p + (1 - y) * p_m ** gamma_neg * log_1m_pm)
            total += w * _per_class(class_weight, c) * loss
    z = {"full": elements, "valid": valid, "batch_size": shape[0], "none": 1,
         "positive": positives}[normalization]
    return total / max(1.0, z)


def zlpr_loss(scores, labels, weights=None, ignore_label=None, normalization="batch_size"):
    """Reference ZLPR loss: per location log(1 + sum_{y=0} e^s) + log(1 + sum_{y=1} e^-s),
    ignored classes in neither sum. weights: None, per sample (N,) or per location."""
    shape = scores.shape
    total = valid = 0.0
    count = 0
    for n, rest in locations(shape):
        count += 1
        negatives, positives = [0.0], [0.0]  # the implicit term: log(1 + ...) = logsumexp([0, ...])
        for c in range(shape[1]):
            x = float(scores[(n, c) + rest])
            y = float(labels[(n, c) + rest])
            if ignore_label is not None and y == ignore_label:
                continue
            (positives if y == 1 else negatives).append(-x if y == 1 else x)
        w = location_weight(weights, n, rest)
        if len(negatives) + len(positives) > 2:
            valid += w
        for terms in (negatives, positives):
            top = max(terms)
            total += w * (top + math.log(sum(math.exp(t - top) for t in terms)))
    z = {"full": count, "valid": valid, "batch_size": shape[0], "none": 1}[normalization]
    return total / max(1.0, z)


def distillation_loss(student, teacher, labels=None, temperature=4.0, activation="softmax",
                      ignore_label=None, normalization="valid"):
    """Reference distillation loss, class axis 1: per location T^2 sum_c q_c log(q_c / p_c)
    with q = softmax(t/T), p = softmax(s/T) (softmax), or T^2 sum_c of the binary
    cross-entropy of p_c = sigmoid(s_c/T) against q_c = sigmoid(t_c/T) minus the entropy of
    q_c (sigmoid). labels: None, one class index per location (softmax) or one label per
    score (sigmoid); a location (element) labelled ignore_label is left out."""
    shape = student.shape
    total = valid = 0.0
    count = 0
    for n, rest in locations(shape):
        count += 1
        if activation == "softmax" and labels is not None:
            if float(labels[(n,) + rest]) == ignore_label:
                continue
        s = [float(student[(n, c) + rest]) / temperature for c in range(shape[1])]
        t = [float(teacher[(n, c) + rest]) / temperature for c in range(shape[1])]
        if activation == "softmax":
            p, q = softmax_row(s), softmax_row(t)
            kl = sum(qc * math.log(qc / pc) for qc, pc in zip(q, p) if qc > 0)
            valid += 1
        else:
            kl, counted = 0.0, False
            for c in range(shape[1]):
                if labels is not None and float(labels[(n, c) + rest]) == ignore_label:
                    continue
                counted = True
                p, q = sigmoid(s[c]), sigmoid(t[c])
                bce = -(q * math.log(p) + (1 - q) * math.log(1 - p))
                entropy = -sum(v * math.log(v) for v in (q, 1 - q) if v > 0)
                kl += bce - entropy
            valid += counted
        total += temperature ** 2 * kl
    z = {"full": count, "valid": valid, "batch_size": shape[0], "none": 1}[normalization]
    return total / max(1.0, z)
