# Two entry points a newcomer needs: `make demo` and `make test`. Both set up .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
DAGWIRE := $(VENV)/bin/dagwire
RUN ?= runs/demo

.PHONY: setup data demo test bench clean

setup: $(VENV)/.installed

# The CPU wheel of torch first: a bare `torch` requirement would pull a multi-GB CUDA build. The rest
# at the versions in constraints.txt.
$(VENV)/.installed: pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0 || $(PY) -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

# Fashion-MNIST from Debian's dataset package, when this machine can install it.
data:
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 || (apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null) || echo "could not install dataset-fashion-mnist; put the files in \$$DAGWIRE_DATA"; \
	else echo "Fashion-MNIST not in /usr/share/datasets: run 'sudo apt-get install dataset-fashion-mnist' or set DAGWIRE_DATA"; fi

# A short, real run (configs/demo.yaml): CFashionMNIST, a 15-node DAG, then τ* chosen on held-out
# training images (within the config's tau_tolerance), what pruning at τ* kept (drawn against the
# initial DAG) and the pruned graph's features, the last line printed.
DEMO_FLAGS ?=
demo: setup data
	rm -rf $(RUN)
	$(DAGWIRE) train --config configs/demo.yaml $(DEMO_FLAGS) --out $(RUN)
	$(DAGWIRE) thresholds $(RUN)
	$(DAGWIRE) draw $(RUN)/graph.json --threshold star --show-removed -o $(RUN)/graph.png
	$(DAGWIRE) features $(RUN)/graph.json --threshold star

test: setup
	$(PY) -m pytest

bench: setup
	$(DAGWIRE) bench --json

clean:
	rm -rf $(VENV) runs
