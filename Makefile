# Two entry points for a fresh machine: `make demo` (the main job) and `make test` (the suite).
# Both install what they need first: the Fashion-MNIST package from Debian and this package from PyPI.
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
EPOCHS ?= 30

.PHONY: install install-dev data demo test

data:
	@dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || \
	  ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist)

install: data
	$(PYTHON) -m pip install -q -e ".[cpu]"

install-dev: data
	$(PYTHON) -m pip install -q -e ".[cpu,dev]"

demo: install
	keras-resnet summary --depth 20 --input-shape 28,28,1 --num-classes 10

test: install-dev
	$(PYTHON) -m pytest -q tests
