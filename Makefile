# robustlab: make demo | make test | make bench | make lint | make docs
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
DOCS_STAMP := $(VENV)/.docs-installed
# one BLAS thread per process: pytest -n 2 and --workers 2 already use both cores
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: demo test bench lint docs install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[test]"
	$(PIP) install -q --no-deps torchattacks==3.5.1  # test/bench peer; its torchvision dependency is unused and broken here
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/robustlab bench run quick --out runs/demo --workers 2
	$(VENV)/bin/robustlab report runs/demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --durations=15

bench: $(STAMP)
	$(PY) -m pytest -q -m slow
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy src/robustlab

# the documentation site (MkDocs Material + mkdocstrings) into site/; --strict: a broken reference fails
$(DOCS_STAMP): $(STAMP) pyproject.toml
	$(PIP) install -q -c constraints.txt -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) runs site .pytest_cache
