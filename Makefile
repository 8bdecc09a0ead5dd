# Set-up and everyday commands. Each target installs what it needs into .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-test test lint serve train-default bench

# `make serve PORT=8080 HOST=0.0.0.0`: where the service listens (else SPINESEG_PORT/HOST, 127.0.0.1:8000).
PORT ?=
HOST ?=
# setuptools' "Editable installation" notice box is information for packagers, not for users.
PIP := PYTHONWARNINGS="ignore:Editable installation" $(BIN)/pip

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

install: $(BIN)/python
	$(PIP) install --quiet -e .

install-test: $(BIN)/python
	$(PIP) install --quiet -e '.[test]'

test: install-test
	$(BIN)/ruff check .
	@# pytest exits 5 when it collected no tests: that is a failure, not a pass.
	$(BIN)/python -m pytest -q -rs; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

lint: install-test
	$(BIN)/ruff check .

serve: install
	@$(BIN)/spineseg serve $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

train-default: install
	bash scripts/train_default.sh

bench: install
	$(BIN)/python bench/segment_speed.py
	$(BIN)/python bench/accuracy.py
