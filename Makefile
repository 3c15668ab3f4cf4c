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

# CIFAR-10 is read from data/ when `make cifar-data` had to build the batches there (../shared/data
# read-only): this shell snippet prints the option that says so, else nothing
CIFAR_DIR = $$([ -f "$$CNNLAB_DATA_DIR/cifar-10-batches-py/test_batch" ] || [ ! -f data/cifar-10-batches-py/test_batch ] || echo --data-dir data)
BENCH_MNIST_CASES := fc,cnn,lenet,lenet99

# The toy's two examples take no subset (a subset larger than its split is refused).
smoke: $(STAMP) cifar-data
	for c in configs/*.yaml; do \
	  dir=; case $$c in configs/cifar10*) dir="$(CIFAR_DIR)";; esac; \
	  subsets="dataset.train_subset=500 dataset.test_subset=200"; case $$c in configs/toy*) subsets=;; esac; \
	  $(BIN)/cnnlab train $$c train.epochs=1 train.max_steps=5 $$subsets --device cpu $$dir > /dev/null || exit 1; \
	  echo "ok $$c"; \
	done

# TrashNet's CIFAR-10 from data/ when it is there alone (the other cases' MNIST stays where it is)
bench: $(STAMP) cifar-data
	dir="$(CIFAR_DIR)"; if [ -z "$$dir" ]; then $(BIN)/cnnlab bench; \
	else $(BIN)/cnnlab bench --cases $(BENCH_MNIST_CASES) && $(BIN)/cnnlab bench --cases trashnet $$dir; fi

# The real CIFAR-10 batches, built once per machine from the compact archive in ../shared/data: beside
# it, or into data/ (git-ignored) when that folder is read-only; the real-data tests look in both.
cifar-data: $(STAMP)
	@if [ -f ../shared/data/cifar10-jpeg.tar.xz ] && [ ! -f ../shared/data/cifar-10-batches-py/test_batch ]; then \
	  if [ -w ../shared/data ]; then $(BIN)/python ../shared/data/build_cifar10.py; \
	  elif [ ! -f data/cifar-10-batches-py/test_batch ]; then $(BIN)/python ../shared/data/build_cifar10.py data; fi; fi

clean:
	rm -rf $(VENV) *.egg-info build
