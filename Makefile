# Every target first makes .venv and installs cnnlab into it (once; redone when pyproject.toml changes).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export CNNLAB_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data),data)

.PHONY: install train test test-fast smoke bench cifar-data clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@# a venv cut short (no pip: python3-venv missing, Ctrl-C) or of a Python before 3.10 is made anew
	$(BIN)/python -c 'import sys, pip; sys.exit(sys.version_info < (3, 10))' 2>/dev/null || $(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install -q -e '.[dev,ray]'
	touch $(STAMP)

train: $(STAMP)
	$(BIN)/cnnlab train configs/mnist_cnn.yaml

test: $(STAMP) cifar-data
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

# CIFAR configs read data/ when `make cifar-data` had to build the batches there (../shared/data read-only).
# The toy's two examples take no subset (a subset larger than its split is refused).
smoke: $(STAMP) cifar-data
	for c in configs/*.yaml; do \
	  dir=; case $$c in configs/cifar10*) [ -f "$$CNNLAB_DATA_DIR/cifar-10-batches-py/test_batch" ] || \
	    [ ! -f data/cifar-10-batches-py/test_batch ] || dir="--data-dir data";; esac; \
	  subsets="dataset.train_subset=500 dataset.test_subset=200"; case $$c in configs/toy*) subsets=;; esac; \
	  $(BIN)/cnnlab train $$c train.epochs=1 train.max_steps=5 $$subsets --device cpu $$dir > /dev/null || exit 1; \
	  echo "ok $$c"; \
	done

# TrashNet's CIFAR-10 from data/ when `make cifar-data` had to build it there (the other cases' MNIST stays put)
bench: $(STAMP) cifar-data
	if [ -f "$$CNNLAB_DATA_DIR/cifar-10-batches-py/test_batch" ] || [ ! -f data/cifar-10-batches-py/test_batch ]; then \
	  $(BIN)/cnnlab bench; \
	else $(BIN)/cnnlab bench --cases fc,cnn,lenet,lenet99 && $(BIN)/cnnlab bench --cases trashnet --data-dir data; fi

# The real CIFAR-10 batches, built once per machine from the compact archive in ../shared/data: beside
# it, or into data/ (git-ignored) when that folder is read-only; the real-data tests look in both.
cifar-data: $(STAMP)
	@if [ -f ../shared/data/cifar10-jpeg.tar.xz ] && [ ! -f ../shared/data/cifar-10-batches-py/test_batch ]; then \
	  if [ -w ../shared/data ]; then $(BIN)/python ../shared/data/build_cifar10.py; \
	  elif [ ! -f data/cifar-10-batches-py/test_batch ]; then $(BIN)/python ../shared/data/build_cifar10.py data; fi; fi

clean:
	rm -rf $(VENV) *.egg-info build
