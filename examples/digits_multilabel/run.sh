#!/usr/bin/env bash
# The main job: build the digits data set, train with pycaffe (progress, test metrics,
# snapshots, curves), then a short `caffe train` run from the same solver with the CLI.
# Run inside the Caffe image from the repository root (make demo does).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=examples/digits_multilabel
nets=prototxt/digits_multilabel
mkdir -p "$here/output"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export GLOG_minloglevel="${GLOG_minloglevel:-2}"
. "$here/blas.sh"  # one BLAS thread, and the same BLAS kernels on every AVX2 CPU
[ -f "$here/data/train.txt" ] || python3 "$here/make_data.py" "$here/data"
python3 -m caffe_losses.train --solver "$nets/solver.prototxt"
echo
echo "The same solver with the plain CLI, 300 iterations (log: $here/output/cli.log):"
sed 's/^max_iter: .*/max_iter: 300/; s#output/digits"#output/cli"#' "$nets/solver.prototxt" > "$here/output/cli_solver.prototxt"
GLOG_minloglevel=0 caffe train -solver "$here/output/cli_solver.prototxt" 2>&1 | tee "$here/output/cli.log" \
    | grep --line-buffered -E "Iteration (0|100|200|300)\b.*loss =|Test net output .*: map =|caffe_losses: "
echo "curves: $here/output/curves.png   weights: $here/output/digits_iter_1500.caffemodel"
python3 -m caffe_losses deploy "$nets/train_val.prototxt" --input-shape 100,1,24,24 -o "$here/output/deploy.prototxt"
python3 "$here/opencv_check.py" "$here/output/deploy.prototxt" "$here/output/digits_iter_1500.caffemodel" "$here/data/test.txt"
