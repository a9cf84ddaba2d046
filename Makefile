# MoE Lab. Two commands do all the set-up on a fresh machine:
#   make lab    install (first time only) and open the course in JupyterLab
#   make test   install (first time only) and run every test
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export GLOG_v := 3
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
PORT ?= 8888

.PHONY: install browser lab test lint hygiene unit nbval notebooks bench checkpoint ep app clean

# The venv is (re)installed only when pyproject.toml changes: the second run is instant.
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c 'import sys; assert (3, 9) <= sys.version_info[:2] <= (3, 12), "MindSpore 2.10 needs Python 3.9-3.12"'
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	$(PY) -m ipykernel install --sys-prefix --name moe-lab --display-name "MoE Lab (MindSpore)" >/dev/null
	@mkdir -p $(VENV)/share/jupyter/lab/settings
	@echo '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' \
		> $(VENV)/share/jupyter/lab/settings/overrides.json
	@touch $@

install: $(STAMP)

# Debian's Chromium for the real-browser tests (Playwright cannot download a browser here), and a CJK
# font so the Chinese part of the corpus renders in plots and in the browser.
browser:
	@if [ -x /usr/bin/chromium ]; then true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core fonts-wqy-microhei >/dev/null; \
	else echo "note: /usr/bin/chromium is missing and apt-get needs root: the browser tests will be skipped"; fi

lab: install
	$(PY) -m jupyter lab --ip=127.0.0.1 --port=$(PORT) --no-browser $(ROOT_FLAG) --ServerApp.root_dir=notebooks

lint: install
	$(PY) -m ruff check moe_lab tests benchmarks tools

hygiene: install
	$(PY) tools/nbtools.py check notebooks/*.ipynb

unit: install browser
	$(PY) -m pytest -rs tests

nbval: install
	$(PY) -m pytest -p no:python --nbval-lax --nbval-current-env --nbval-cell-timeout=300 \
		--nbval-sanitize-with tests/nbval_sanitize.cfg notebooks

test: lint hygiene unit nbval

# Re-run every notebook from a fresh kernel and store its outputs (after editing a notebook).
notebooks: install
	$(PY) tools/nbtools.py execute notebooks/*.ipynb

bench: install
	$(PY) -m benchmarks.moe_bench

checkpoint: install
	$(PY) -m moe_lab checkpoint

ep: install
	$(PY) -m moe_lab ep --world-size 2
	$(PY) -m moe_lab ep --world-size 4

app: install
	$(PY) -m voila notebooks/app_expert_load.ipynb --no-browser --Voila.ip=127.0.0.1 --port=8866

clean:
	rm -rf $(VENV) .pytest_cache test-output
