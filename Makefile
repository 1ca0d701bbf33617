# BehaviorGate — the two set-up commands are `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo serve test lint bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first and pinned: a CPU build of 2.13.0 is on the machine; any other pulls CUDA.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The gateway's main job on embedded defaults, in front of the bundled sample API.
demo: $(STAMP)
	$(BIN)/behaviorgate demo

serve: $(STAMP)
	$(BIN)/behaviorgate serve --upstream http://127.0.0.1:8000 --port 8080

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check config scoring storage proxy tests bench

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) data .pytest_cache .hypothesis
