# `make demo` and `make test` each bootstrap .venv on a fresh machine with only python3 and make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

.PHONY: demo test bench clean bubblewrap chromium wrk test-packages

$(STAMP): pyproject.toml examples/aitk-wine/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[train,dev,ray]' -e examples/aitk-wine
	touch $(STAMP)

# `aitk codegen evaluate` runs generated code only inside bubblewrap (a Debian/Ubuntu package).
bubblewrap:
	@command -v bwrap >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq bubblewrap)

# Tests drive a real headless Chromium (Debian/Ubuntu packages): `evaluate --report`'s index.html
# and the `aitk serve` chat page.
chromium:
	@(command -v chromium >/dev/null && command -v chromedriver >/dev/null) || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium chromium-driver)

# benchmarks/serve.py loads the server with wrk, a C HTTP load generator (a Debian/Ubuntu package).
wrk:
	@command -v wrk >/dev/null || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq wrk)

demo: $(STAMP) bubblewrap
	$(BIN)/aitk demo

# What `make test` needs of both, installed with one `apt-get update` (on a clean machine the two
# targets above each ran one).
test-packages:
	@missing=""; command -v bwrap >/dev/null || missing="bubblewrap"; \
	(command -v chromium >/dev/null && command -v chromedriver >/dev/null) || missing="$$missing chromium chromium-driver"; \
	[ -z "$$missing" ] || ($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing)

test: $(STAMP) test-packages
	$(BIN)/python -m pytest -q

bench: $(STAMP) wrk
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) aitk-demo
