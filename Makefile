# The two commands of the README:
#   make demo   the multi-label digits example, trained inside the Caffe image
#   make demo-images  the same on PNG files and a list, read by MultiLabelImageData
#   make test   host tests (numpy only, then again with the `fast` extra: today's numba),
#               then every test inside the Caffe image
#   make distill  the digits net distilled into a smaller student, with and without
#   make bench  the speed and memory benchmark (not a test: it never fails on speed)
#   make bench-jit  the compiled loops against the numpy code, loss by loss
# The Caffe image is built on first use (docker, or buildah without a daemon).

PYTHON ?= python3
CAFFE_ENV := tools/caffe-env
# Host tests run in a virtualenv that sees the system packages and adds PyTorch
# (CPU) for the parity tests; TORCH= (empty) skips installing it.
HOST_VENV ?= $(HOME)/.cache/caffe-losses/host-venv
TORCH ?= torch==2.13.0
VPY := $(HOST_VENV)/bin/python
# The host tests run a second time in a virtualenv of `pip install .[fast]` from PyPI,
# updated at every run, so that every kernel compiles on the current numba (the image has
# Debian's), into a numba cache made empty for the run. The package is installed from a
# copy: a build in the checkout would leave build/ there.
FAST_VENV ?= $(HOME)/.cache/caffe-losses/host-venv-fast
FPY := $(FAST_VENV)/bin/python

.PHONY: test host-test caffe-test image demo demo-images toy compare distill bench bench-data bench-jit shell

test: host-test caffe-test

host-test:
	@test -x $(VPY) || $(PYTHON) -m venv --system-site-packages $(HOST_VENV)
	@$(VPY) -c "import numpy, pytest, hypothesis" 2>/dev/null || \
		$(VPY) -m pip install -q "numpy>=1.17" pytest hypothesis
	@[ -z "$(TORCH)" ] || $(VPY) -c "import torch" 2>/dev/null || \
		{ echo "installing $(TORCH) into $(HOST_VENV) for the parity tests"; \
		  $(VPY) -m pip install -q "$(TORCH)" >$(HOST_VENV)/torch-install.log 2>&1; } || \
		echo "PyTorch could not be installed (see $(HOST_VENV)/torch-install.log): its parity tests will be skipped"
	$(VPY) -m pytest -q tests/host
	@test -x $(FPY) || $(PYTHON) -m venv $(FAST_VENV)
	@echo "installing or updating .[fast] (numba) in $(FAST_VENV)"
	@copy=$$(mktemp -d) && cp -r setup.py README.md caffe_losses $$copy && \
		$(FPY) -m pip install -q --upgrade --upgrade-strategy eager "$$copy[fast]" pytest \
		hypothesis; status=$$?; rm -rf $$copy; exit $$status
	cache=$$(mktemp -d) && NUMBA_CACHE_DIR=$$cache $(FPY) -m pytest -q tests/host; \
		status=$$?; rm -rf $$cache; exit $$status

# --require-caffe: a skipped or missing Caffe test fails the run.
caffe-test: image
	GLOG_minloglevel=2 $(CAFFE_ENV) python3 -m pytest -q --require-caffe tests

image:
	$(CAFFE_ENV) --build

# The GPU image (docker/Dockerfile.gpu: Debian's Caffe source built with CUDA, about half
# an hour on 2 cores; docs/gpu.md). gpu-test: the tests in it, Caffe in CPU mode (no GPU).
# gpu-check (CI): only that its apt packages resolve in bullseye, without building it.
.PHONY: gpu-image gpu-test gpu-check
gpu-image:
	$(CAFFE_ENV) --gpu --build

gpu-test: gpu-image
	GLOG_minloglevel=2 $(CAFFE_ENV) --gpu python3 -m pytest -q --require-caffe tests

gpu-check:
	$(CAFFE_ENV) --gpu --check

# The main job: the multi-label digits example, trained with pycaffe and the caffe CLI.
demo: image
	$(CAFFE_ENV) examples/digits_multilabel/run.sh

demo-images: image
	$(CAFFE_ENV) examples/digits_multilabel/run_images.sh

# The smallest example: a two-layer perceptron on synthetic data, `caffe train` only.
toy: image
	$(CAFFE_ENV) examples/toy_multilabel/run.sh

# Every multi-label loss on the digits task, seeds 1-3: mean ± sd table and plot.
compare: image
	$(CAFFE_ENV) python3 examples/digits_multilabel/compare.py

# The digits net distilled into a student of a fifth of its size (caffe-losses distill):
# the student trained alone and distilled, seeds 1-3; writes output/distill/distill.{md,json}.
distill: image
	$(CAFFE_ENV) python3 examples/digits_multilabel/distill.py

# Times every layer against Caffe's C++ layers, the naive loop and the numpy floor;
# writes benchmarks/results/bench.{json,md,png} (a few minutes), then bench-data's
# table. BASELINE=REV also times the layers of commit REV in the same run (git
# extracts them here: the image has no git). BENCH_ARGS passes more options to
# bench.py, e.g. --quick.
BASELINE ?=
BENCH_ARGS ?=
bench: image
ifneq ($(BASELINE),)
	rm -rf .scratch/baseline && mkdir -p .scratch/baseline
	git archive $(BASELINE) caffe_losses | tar -x -C .scratch/baseline
	mv .scratch/baseline/caffe_losses .scratch/baseline/caffe_losses_baseline
	$(CAFFE_ENV) python3 benchmarks/bench.py --baseline $(BASELINE) $(BENCH_ARGS)
else
	$(CAFFE_ENV) python3 benchmarks/bench.py $(BENCH_ARGS)
endif
	$(MAKE) --no-print-directory bench-data

# MultiLabelImageData against ImageData on the same JPEG list, images per second,
# with the consumer net on OpenBLAS's own threads, then on one (as the digits
# example); writes benchmarks/results/data_bench{,_blas1}.{json,md} (about 5 minutes).
bench-data: image
	$(CAFFE_ENV) python3 benchmarks/data_bench.py
	$(CAFFE_ENV) python3 benchmarks/data_bench.py --blas-threads 1

bench-jit: image
	$(CAFFE_ENV) python3 benchmarks/jit_vs_numpy.py

shell: image
	$(CAFFE_ENV) bash
