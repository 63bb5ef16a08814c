# Two commands for a newcomer: `make demo` and `make test`. Everything else is for developers.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SCALE  ?= 1
DEMO   := var/demo
PORT   ?= 2718

.PHONY: demo test venv demo-data refresh serve bench lint clean lock

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

## make demo: environment, realistic demo data (SCALE=1: Dudley and Walsall), a refresh, then the explorer app
demo: $(STAMP) demo-data refresh serve

demo-data: $(STAMP)
	@if [ -f $(DEMO)/.scale-$(SCALE) ]; then echo "demo data already in $(DEMO) (scale $(SCALE))"; else \
	  rm -rf $(DEMO) && $(BIN)/outcomes demo-data --out $(DEMO) --scale $(SCALE) > /dev/null && touch $(DEMO)/.scale-$(SCALE); fi

refresh: $(STAMP)
	$(BIN)/outcomes refresh --data $(DEMO)

serve: $(STAMP)
	@echo ""
	@echo "  Explorer app: http://127.0.0.1:$(PORT)   (Ctrl+C to stop)"
	@echo ""
	$(BIN)/marimo run notebooks/explorer.py --host 127.0.0.1 --port $(PORT) --headless

## make test: environment, then the whole test suite
test: $(STAMP)
	$(BIN)/python -m pytest

bench: $(STAMP)
	@$(BIN)/python -c "import pandas, duckdb, pyinstrument" 2>/dev/null || \
	  $(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,bench]"
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(STAMP)
	$(BIN)/marimo check notebooks/*.py

clean:
	rm -rf $(VENV) var build *.egg-info

## make lock: re-pin every installed version (run after changing dependencies in pyproject.toml)
lock: $(STAMP)
	$(BIN)/python -m pip freeze --exclude-editable > constraints.txt
