# Two commands (see README):
#   make run    set up .venv and run the main job
#   make test   set up .venv and run the test suite
PYTHON ?= python3
# Where pip finds torch 2.13.0 (constraints-dev.txt). Empty: pip's configured index. From the public
# PyPI that is a CUDA build on Linux x86_64 (several GB); for the CPU build (about 200 MB) use
#   make TORCH_INDEX=https://download.pytorch.org/whl/cpu test
TORCH_INDEX ?=
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run walkthrough lab html notebooks test browser-test bench clean

$(STAMP): pyproject.toml constraints-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints-dev.txt $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==2.13.0
	$(PY) -m pip install -q -c constraints-dev.txt -e ".[dev]"
	# The official SAM 2 code, for the parity tests: its sdist wants a CUDA build and hydra, neither
	# needed by the sam2.modeling.sam modules the tests import (sam_explain/testing.py).
	SAM2_BUILD_CUDA=0 $(PY) -m pip install -q --no-deps --no-build-isolation sam2==1.1.0
	touch $(STAMP)

setup: $(STAMP)

NB_STAMP := $(VENV)/.installed-notebook

$(NB_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints-dev.txt -e ".[dev,notebook]"
	touch $(NB_STAMP)

# The main job: the walkthrough in JupyterLab (as root, e.g. in a container, Jupyter needs --allow-root).
# JupyterLab opens working copies in build/walkthrough/, so that what a learner runs, edits and saves
# (outputs, kernel metadata) never changes the tracked notebooks; a copy is refreshed when its
# notebook in notebooks/ is newer.
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)
WALKTHROUGH := build/walkthrough

walkthrough: $(NB_STAMP)
	@mkdir -p $(WALKTHROUGH)
	@for nb in notebooks/0*.ipynb; do \
	  copy=$(WALKTHROUGH)/$$(basename $$nb); \
	  if [ ! -e $$copy ] || [ $$nb -nt $$copy ]; then cp $$nb $$copy; fi; \
	done

run: walkthrough
	$(VENV)/bin/jupyter lab $(ALLOW_ROOT) --LabApp.news_url=None --ServerApp.root_dir=$(WALKTHROUGH) 01_tour.ipynb

# The same notebooks executed headless, written as HTML with their pictures to build/html.
html: $(NB_STAMP)
	$(VENV)/bin/jupyter nbconvert --to html --execute --ExecutePreprocessor.store_widget_state=False --output-dir build/html notebooks/0*.ipynb
	@echo "open build/html/01_tour.html"

# Regenerate the .ipynb files (outputs cleared) from their jupytext sources notebooks/*.py.
notebooks: $(STAMP)
	$(PY) tools/sync_notebooks.py

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

# The live explorer in a real browser: JupyterLab on localhost and headless Chromium (Debian's chromium
# and chromium-driver: apt-get install -y chromium chromium-driver; the tests skip without them).
browser-test: $(NB_STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests_browser

bench: $(STAMP)
	$(PY) benchmarks/bench_decoder.py
	$(PY) benchmarks/bench_trace.py
	$(PY) benchmarks/bench_attention.py
	$(PY) benchmarks/bench_image_encoder.py
	$(PY) benchmarks/bench_onnx.py --threads 2
	$(PY) benchmarks/bench_explorer.py

clean:
	rm -rf $(VENV) build
