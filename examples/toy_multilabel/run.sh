#!/usr/bin/env bash
# Train the toy multi-label net with the plain `caffe train` CLI.
# Run inside the Caffe image from the repository root: tools/caffe-env examples/toy_multilabel/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
here=examples/toy_multilabel
mkdir -p "$here/output"
python3 "$here/make_data.py" "$here/data"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
echo "caffe train -solver $here/solver.prototxt  (log: $here/output/train.log)"
caffe train -solver "$here/solver.prototxt" 2>&1 | tee "$here/output/train.log" \
    | grep --line-buffered -E "Iteration [0-9]+.*loss =|Test net output|Optimization Done|caffe_losses|Check failed"
python3 - "$here/output/train.log" <<'PY'
import re
import sys

log = open(sys.argv[1]).read()
losses = [float(v) for v in re.findall(r"\] Iteration \d+.*?, loss = (\S+)", log)]
if len(losses) < 2:
    sys.exit("no training losses found in the log")
first, last = losses[0], losses[-1]
print("training loss: first %.4f, last %.4f (%.0f%% lower)" % (first, last, 100 * (1 - last / first)))
if not last < 0.8 * first:
    sys.exit("the loss did not fall")
PY
echo "weights: $here/output/toy_iter_400.caffemodel"
