#!/usr/bin/env bash
# The digits example on image files: the canvases as gray PNG files with a list file per
# split (make_data.py --images), read by MultiLabelImageData; trained with pycaffe, then
# a short `caffe train` run from the same solver. Run inside the Caffe image from the
# repository root (make demo-images does).
set -euo pipefail
cd "$(dirname "$0")/../.."
here=examples/digits_multilabel
nets=prototxt/digits_multilabel
out=$here/output/images
mkdir -p "$out"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export GLOG_minloglevel="${GLOG_minloglevel:-2}"
. "$here/blas.sh"  # one BLAS thread, and the same BLAS kernels on every AVX2 CPU
[ -f "$here/data/images/train.txt" ] || python3 "$here/make_data.py" "$here/data" --images
python3 -m caffe_losses.train --solver "$nets/solver_images.prototxt"
echo
echo "The same solver with the plain CLI, 300 iterations (log: $out/cli.log):"
sed 's/^max_iter: .*/max_iter: 300/; s#output/images/digits"#output/images/cli"#' \
    "$nets/solver_images.prototxt" > "$out/cli_solver.prototxt"
GLOG_minloglevel=0 caffe train -solver "$out/cli_solver.prototxt" 2>&1 | tee "$out/cli.log" \
    | grep --line-buffered -E "Iteration (0|100|200|300)\b.*loss =|Test net output .*: map =|caffe_losses: "
echo "curves: $out/curves.png   weights: $out/digits_iter_1500.caffemodel"
