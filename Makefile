# The two commands of the README:
#   make demo   train the example net with `caffe train` inside the Caffe image
#   make test   host tests (numpy only), then every test inside the Caffe image
# The Caffe image is built on first use (docker, or buildah without a daemon).

PYTHON ?= python3
CAFFE_ENV := tools/caffe-env

.PHONY: test host-test caffe-test image demo shell

test: host-test caffe-test

host-test:
	@$(PYTHON) -c "import numpy, pytest, hypothesis" 2>/dev/null || \
		$(PYTHON) -m pip install -q "numpy>=1.17" pytest hypothesis
	$(PYTHON) -m pytest -q tests/host

# --require-caffe: a skipped or missing Caffe test fails the run.
caffe-test: image
	GLOG_minloglevel=2 $(CAFFE_ENV) python3 -m pytest -q --require-caffe tests

image:
	$(CAFFE_ENV) --build

demo: image
	$(CAFFE_ENV) examples/toy_multilabel/run.sh

shell: image
	$(CAFFE_ENV) bash
