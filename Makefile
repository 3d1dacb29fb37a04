# Two user-facing targets: `make demo` and `make test`. Both create or reuse .venv at the repo root.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
export PYTHONPATH := $(CURDIR)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TF_CPP_MIN_LOG_LEVEL := 3

.PHONY: demo test venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP_RUN): requirements.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(STAMP_TEST): requirements.txt requirements-test.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $@ $(STAMP_RUN)

venv: $(STAMP_TEST)

# pytest exits 5 when it collected nothing: that must fail, and it does (any non-zero status fails make).
test: $(STAMP_TEST)
	$(PY) -m pytest -q tests

demo: $(STAMP_TEST)
	$(PY) -m mire_jax.demo

clean:
	rm -rf $(VENV) runs
