# Two commands (see README):
#   make run    set up .venv and run the main job
#   make test   set up .venv and run the test suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup run lab html notebooks test bench clean

$(STAMP): pyproject.toml constraints-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints-dev.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints-dev.txt -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

NB_STAMP := $(VENV)/.installed-notebook

$(NB_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints-dev.txt -e ".[dev,notebook]"
	touch $(NB_STAMP)

# The main job: the walkthrough in JupyterLab (as root, e.g. in a container, Jupyter needs --allow-root).
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root,)

run: $(NB_STAMP)
	$(VENV)/bin/jupyter lab $(ALLOW_ROOT) notebooks/01_tour.ipynb

# The same notebooks executed headless, written as HTML with their pictures to build/html.
html: $(NB_STAMP)
	$(VENV)/bin/jupyter nbconvert --to html --execute --output-dir build/html notebooks/0*.ipynb
	@echo "open build/html/01_tour.html"

# Regenerate the .ipynb files (outputs cleared) from their jupytext sources notebooks/*.py.
notebooks: $(STAMP)
	$(VENV)/bin/jupytext --update --to ipynb notebooks/0*.py

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

bench: $(STAMP)
	$(PY) benchmarks/bench_decoder.py
	$(PY) benchmarks/bench_trace.py
	$(PY) benchmarks/bench_attention.py
	$(PY) benchmarks/bench_image_encoder.py

clean:
	rm -rf $(VENV) build
