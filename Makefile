# Two user-facing targets: `make demo` and `make test`. Both create or reuse .venv at the repo root.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TF_CPP_MIN_LOG_LEVEL := 3

.PHONY: demo test clean browser

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# The project itself is installed in editable mode: entry points and tests import `mire_jax` from this checkout.
$(VENV)/.installed-demo: pyproject.toml requirements.txt requirements-serve.txt requirements-demo.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-demo.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml requirements.txt requirements-serve.txt requirements-demo.txt \
                         requirements-test.txt | $(PY)
	$(PY) -m pip install --quiet -r requirements-test.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@ $(VENV)/.installed-demo

# The browser test of the search page drives Debian's chromium, never a downloaded browser. Installed here when it is
# missing, only as root with apt-get; this never fails the target: without a browser that test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser test"; \
	    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >/dev/null 2>&1 \
	      || echo "could not install chromium: the browser test will skip"; \
	  else echo "chromium is not installed and this is not root with apt-get: the browser test will skip"; fi; }

# pytest's exit status 5 (no tests collected) is non-zero, so it fails the target like any other failure.
# The linter first (pyflakes and import rules, configured in pyproject.toml), then the suite.
test: $(VENV)/.installed-test browser
	$(PY) -m ruff check .
	$(PY) -m pytest -q tests

demo: $(VENV)/.installed-demo
	$(PY) -m mire_jax.demo --out runs/demo

clean:
	rm -rf $(VENV) runs
