# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Both install what they need first: the Fashion-MNIST package from Debian and this package from PyPI.
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
EPOCHS ?= 5
DEPTH ?= 20
PRECISION ?= auto

.PHONY: install install-dev data demo test test-fast

data:
	@dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist)

install: data
	$(PYTHON) -m pip install -q -e ".[all]"

install-dev: data
	$(PYTHON) -m pip install -q -e ".[all,dev]"

FMNIST := /usr/share/datasets/fashion-mnist

# The main job: train a ResNet on the real Fashion-MNIST shipped by Debian (offline) and print its
# test accuracy, then write a verified int8 LiteRT model and classify test images with it the way an
# app would. `make demo EPOCHS=32 PRECISION=mixed_bfloat16` is the run of the README's result.
demo: install
	keras-resnet summary --depth $(DEPTH) --input-shape 28,28,1 --num-classes 10
	keras-resnet train --depth $(DEPTH) --epochs $(EPOCHS) --precision $(PRECISION) --erase 0.3 \
	  --label-smoothing 0.1 --val-fraction 0.05 --run-dir saved_models/demo
	keras-resnet export saved_models/demo/model.keras --quantize int8 --output saved_models/demo/model_int8.tflite
	keras-resnet predict saved_models/demo/model_int8.tflite --idx $(FMNIST)/t10k-images-idx3-ubyte.gz \
	  --labels $(FMNIST)/t10k-labels-idx1-ubyte.gz --limit 10 --top 1

# The whole suite (what CI runs), and the fast tier (every module, no training runs, searches,
# subprocesses or multi-process jobs: the tests marked slow are left out).
# pytest exits 5 when it collects no test: that is a failure here, not a pass.
# One pytest worker per core (pytest-xdist); a file's tests stay in one worker, so that its shared
# fixtures are made once.
TEST_WORKERS ?= auto
PYTEST_ARGS ?= -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=20
# The layering contract (.importlinter) first: a package that imports one above it fails the run.
test: install-dev
	lint-imports --config .importlinter
	$(PYTHON) -m pytest -q $(PYTEST_ARGS) tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi; exit $$rc

test-fast: install-dev
	lint-imports --config .importlinter
	$(PYTHON) -m pytest -q -m "not slow" $(PYTEST_ARGS) tests; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "no tests were collected" >&2; exit 1; fi; exit $$rc
