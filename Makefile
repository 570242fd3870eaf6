# The course's two commands. Each does ALL set-up on a fresh machine:
#   make book   -> creates .venv, installs the course, builds the HTML book in _build/html
#                  (English) and _build/html/zh (Chinese, from locales/zh_CN; tools/i18n.py),
#                  and a PDF of each (tools/build_pdf.py)
#   make test   -> creates .venv, installs the course, runs every test (package + notebooks)
#
# torch: a CPU build by default (no CUDA wheels). With a GPU, pick another build, e.g.
#   make book TORCH_INDEX=https://download.pytorch.org/whl/cu128
# (see README.md, "Running on a GPU").

PYTHON      ?= python3
VENV        ?= .venv
TORCH_SPEC  ?= torch==2.13.0
TORCH_INDEX ?=
CONSTRAINTS ?= constraints.txt
BIN         := $(VENV)/bin
INSTALLED   := $(VENV)/.installed
OFFLINE     := _offline/.installed
PY_SOURCES  := $(wildcard companion/*.py)

# OpenMP threads spin only briefly (1,000 iterations) before they sleep: on a busy machine a
# spinning thread burns the core that the thread it waits for needs, and small models then train
# 3x slower (README, "A busy machine"; benchmarks/busy_machine.py). GNU OpenMP, as in torch's
# Linux wheels, reads GOMP_SPINCOUNT; override it, or set OMP_WAIT_POLICY, to change this.
GOMP_SPINCOUNT ?= 1000
export GOMP_SPINCOUNT

.PHONY: book test env clean help

help:
	@echo "make book   build the HTML book into _build/html (sets up .venv first)"
	@echo "make test   run every test: package tests and every notebook (sets up .venv first)"

env: $(INSTALLED)

$(INSTALLED): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet $(if $(CONSTRAINTS),-c $(CONSTRAINTS)) -e ".[book,test]"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --env GOMP_SPINCOUNT $(GOMP_SPINCOUNT) >/dev/null
	touch $@

# MathJax and the widget manager, served by the site itself (html_extra_path: _offline).
$(OFFLINE): tools/offline-assets/package.json tools/offline-assets/package-lock.json tools/mathjax2-shim.js
	cd tools/offline-assets && npm ci --no-audit --no-fund --loglevel=error
	rm -rf _offline && mkdir -p _offline/widgets
	cp -r tools/offline-assets/node_modules/mathjax/es5 _offline/mathjax
	cp -r tools/offline-assets/node_modules/@jupyter-widgets/html-manager/dist/. _offline/widgets/
	cp tools/offline-assets/node_modules/requirejs/require.js _offline/widgets/require.js
	cp tools/mathjax2-shim.js _offline/widgets/mathjax2-shim.js
	touch $@

# The execution cache does not see edits to the package: drop it when companion/ changes, or the
# translations of the words inside figures, which the execution draws (companion/figure_translation.py).
# Both editions' doctrees go too, so that each page is read again and its notebook executed afresh.
FIGURE_TRANSLATIONS := locales/zh_CN/LC_MESSAGES/figures.po
_build/.companion-stamp: $(PY_SOURCES) $(FIGURE_TRANSLATIONS)
	rm -rf _build/.jupyter_cache _build/.doctrees _build/.doctrees-zh
	mkdir -p _build && touch $@

# The Chinese edition reuses the English build's execution cache (each notebook runs once), and
# fails, like the English one, on any warning; 'i18n.py check' then fails on any English message
# without a faithful translation (extracted afresh from the sources).
# The PDFs (one per language, tools/build_pdf.py) are printed by the system Chromium, the one the
# browser test uses; without it the book is built and the PDFs are skipped, saying why.
CHROMIUM := $(or $(COMPANION_CHROMIUM),$(shell command -v chromium || command -v chromium-browser))

# Every notebook the book executes draws each figure a second time, in Chinese (companion/figure_translation.py).
book: export COMPANION_FIGURE_TRANSLATIONS = $(CURDIR)/$(FIGURE_TRANSLATIONS)
book: $(INSTALLED) $(OFFLINE) _build/.companion-stamp
	$(BIN)/jupyter-book build . -W -n --keep-going
	$(BIN)/python tools/i18n.py build
	$(BIN)/python tools/i18n.py extract
	$(BIN)/python tools/i18n.py check
ifneq ($(CHROMIUM),)
	$(BIN)/python tools/build_pdf.py en
	$(BIN)/python tools/build_pdf.py zh_CN
else
	@echo "PDFs skipped: no Chromium (apt-get install chromium fonts-wqy-microhei, or set COMPANION_CHROMIUM)"
endif
	$(BIN)/python tools/check_site.py _build/html

test: $(INSTALLED)
	$(BIN)/python -m pytest

clean:
	rm -rf _build _offline
