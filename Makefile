# `make run` serves the embedded default (SQLite, demo data); `make test` runs the test suite.

PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 5000
PYTEST_ARGS ?=

PY := $(VENV)/bin/python
FLASK := $(PY) -m flask --app wsgi
# Touched after a successful install, so requirements are reinstalled only when requirements.txt changes.
STAMP := $(VENV)/.requirements-installed

.DEFAULT_GOAL := help
.PHONY: help install run worker test clean

help:
	@echo "make run      serve the helpdesk at http://$(HOST):$(PORT)/ on SQLite with demo data"
	@echo "make test     run the tests (PYTEST_ARGS='-k name' to pick some)"
	@echo "make install  create $(VENV) and install requirements.txt"
	@echo "make worker   run the background jobs in their own process"
	@echo "make clean    remove $(VENV) and caches (keeps instance/, which holds the data and secret key)"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.txt | $(PY)
	$(PY) -m pip install --disable-pip-version-check --quiet -r requirements.txt
	touch $@

install: $(STAMP)

# Socket.IO accepts browsers only from HELPDESK_PUBLIC_URL, so it follows HOST and PORT unless set.
run: export HELPDESK_PUBLIC_URL ?= http://$(HOST):$(PORT)
run: $(STAMP)
	$(FLASK) db upgrade
	$(FLASK) helpdesk seed-demo
	$(FLASK) helpdesk serve --host $(HOST) --port $(PORT)

worker: $(STAMP)
	$(FLASK) helpdesk worker

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
