# MoE Lab. Two commands do all the set-up on a fresh machine:
#   make lab    install (first time only) and open the course in JupyterLab
#   make test   install (first time only) and run every test
SHELL := /bin/bash
# MindSpore 2.10 has wheels for CPython 3.10-3.12 and matplotlib 3.11 needs 3.11+: the course runs on 3.11 or 3.12.
# Never an older python3 (openEuler 22.03 and an Orange Pi AIpro's conda base have 3.9).
PYTHON ?= $(shell command -v python3.11 || command -v python3.12)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PY_HINT := MoE Lab needs Python 3.11 or 3.12: install python3.11 (apt-get install python3.11 python3.11-venv, or conda create -n moe-lab python=3.11) and rerun, or pass make PYTHON=/path/to/python3.11
# The emulated Atlas boards `make test` also runs (moe_lab.ascend.backend): the A2 board runs every test and
# notebook that depends on the backend; the 310P and 310B tiers run the unit tests.
EMULATED_BOARDS := emulate-910b emulate-310p emulate-310b
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
PORT ?= 8888

.PHONY: install fonts browser lab test lint hygiene unit nbval emulated notebooks bench checkpoint ep app app-zh clean fixtures

# The venv is (re)installed only when pyproject.toml changes: the second run is instant.
$(STAMP): pyproject.toml
	@test -x $(PY) || { test -n "$(PYTHON)" || { echo "$(PY_HINT)"; exit 2; }; \
		$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))' \
		|| { echo "$(PYTHON) is Python $$($(PYTHON) -c 'import platform; print(platform.python_version())'); $(PY_HINT)"; exit 2; }; \
		$(PYTHON) -m venv $(VENV); }
	@$(PY) -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))' \
		|| { echo "$(VENV) has Python $$($(PY) -c 'import platform; print(platform.python_version())'); remove $(VENV) (make clean). $(PY_HINT)"; exit 2; }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	$(PY) -m ipykernel install --sys-prefix --name moe-lab --display-name "MoE Lab (MindSpore)" >/dev/null
	$(PY) -m ipykernel install --sys-prefix --name moe-lab-zh --display-name "MoE Lab (MindSpore, 中文)" \
		--env MOE_LAB_LANG zh >/dev/null
	@mkdir -p $(VENV)/share/jupyter/lab/settings
	@echo '{"@jupyterlab/apputils-extension:notification": {"fetchNews": "false", "checkForUpdates": false}}' \
		> $(VENV)/share/jupyter/lab/settings/overrides.json
	@touch $@

install: $(STAMP)

# A font with Chinese glyphs, so the Chinese edition and the Chinese part of the corpus render in plots and in
# the browser (macOS ships one; moe_lab.setup() says so if none is found).
WQY := /usr/share/fonts/truetype/wqy/wqy-microhei.ttc
fonts:
	@if [ -e $(WQY) ] || [ "$$(uname)" = Darwin ]; then true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-wqy-microhei >/dev/null; \
	else echo "note: no Chinese font found (apt-get install fonts-wqy-microhei): Chinese plot text may show as boxes"; fi

# Debian's Chromium for the real-browser tests (Playwright cannot download a browser here).
browser: fonts
	@if [ -x /usr/bin/chromium ]; then true; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null; \
	else echo "note: /usr/bin/chromium is missing and apt-get needs root: the browser tests will be skipped"; fi

lab: install fonts
	$(PY) -m jupyter lab --ip=127.0.0.1 --port=$(PORT) --no-browser $(ROOT_FLAG) --ServerApp.root_dir=notebooks

lint: install
	$(PY) -m ruff check moe_lab tests benchmarks tools

hygiene: install
	$(PY) tools/nbtools.py check notebooks/*.ipynb notebooks/zh/*.ipynb
	$(PY) tools/i18n.py check

unit: install browser
	$(PY) -m pytest -rs tests

NBVAL = $(PY) -m pytest -p no:python --nbval-lax --nbval-current-env --nbval-cell-timeout=300 \
		--nbval-sanitize-with tests/nbval_sanitize.cfg

# The English notebooks on this machine's backend
nbval: install
	$(NBVAL) notebooks/*.ipynb

# The same tests on emulated Atlas boards: every board-dependent unit test on each tier, and every notebook on
# the A2 board (its default dispatch is the fused path, on the reference operators). The notebooks run there in
# their Chinese edition: the same code as the English ones (only comments and the text of strings are translated),
# so the CPU pass and this one together run every notebook's code on both backends and check both editions' stored
# outputs, within make test's time.
emulated: install
	@for board in $(EMULATED_BOARDS); do echo "== unit tests on $$board"; \
		MOE_LAB_BACKEND=$$board $(PY) -m pytest -q -rs tests || exit 1; done
	@echo "== the Chinese notebooks on emulate-910b"
	MOE_LAB_BACKEND=emulate-910b MOE_LAB_LANG=zh $(NBVAL) notebooks/zh/*.ipynb

test: lint hygiene unit nbval emulated

# Re-run every notebook from a fresh kernel and store its outputs (after editing a notebook).
notebooks: install fonts
	$(PY) tools/nbtools.py execute notebooks/*.ipynb notebooks/zh/*.ipynb

bench: install
	$(PY) -m benchmarks.moe_bench

checkpoint: install
	$(PY) -m moe_lab checkpoint

ep: install
	$(PY) -m moe_lab ep --world-size 2
	$(PY) -m moe_lab ep --world-size 4
	$(PY) -m moe_lab ep --world-size 4 --scoring-func sigmoid --routed-scaling-factor 2.5 --n-shared-experts 1 \
		--top-k 3 --n-group 4 --topk-group 2

# Voila: the kernel of a closed page is shut down after 5 idle minutes (open pages keep theirs)
VOILA_CULL := --MappingKernelManager.cull_idle_timeout=300 --MappingKernelManager.cull_interval=60 \
		--MappingKernelManager.cull_connected=False

app: install
	$(PY) -m voila notebooks/app_expert_load.ipynb --no-browser --Voila.ip=127.0.0.1 --port=8866 $(VOILA_CULL)

# The Chinese app (its notebook's kernel sets MOE_LAB_LANG=zh)
app-zh: install fonts
	$(PY) -m voila notebooks/zh/app_expert_load.ipynb --no-browser --Voila.ip=127.0.0.1 --port=8867 $(VOILA_CULL)

# Regenerate the Hugging Face fixtures of tests/fixtures/ with transformers' own MoE blocks (tests/fixtures/README.md).
# torch and transformers go into a venv of their own: the course never imports them.
PEERS := .venv-peers
fixtures:
	@test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install -q -e '.[peers]'
	$(PEERS)/bin/python tools/make_hf_fixtures.py

clean:
	rm -rf $(VENV) $(PEERS) .pytest_cache test-output
