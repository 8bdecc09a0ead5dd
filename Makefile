# Set-up and everyday commands. Each target installs what it needs into .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install install-test test lint serve train-default bench

# The API test modules run a second time against PostgreSQL + Redis (`--backends=pg-redis`).
PG_REDIS_TESTS := $(addprefix tests/web/,test_api_studies.py test_admin.py test_audit_trail.py \
	test_resumable_uploads.py test_session_records.py test_sessions_and_pages.py test_throttle.py \
	test_datasets_api.py test_training_api.py)

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
	@# Once more on PostgreSQL + Redis (servers the tests start on 127.0.0.1): every API test
	@# module whose app honours --backends (about 5 minutes on 2 cores).
	$(BIN)/python -m pytest -q -rs --backends=pg-redis $(PG_REDIS_TESTS)

lint: install-test
	$(BIN)/ruff check .

serve: install
	@$(BIN)/spineseg serve $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

train-default: install
	bash scripts/train_default.sh

bench: install
	$(BIN)/python bench/segment_speed.py
	$(BIN)/python bench/accuracy.py
