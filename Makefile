# The front door. `make recipe` sets up a fresh clone and runs the default ASR recipe;
# `make test` sets up and runs the tests (what CI runs); `make ui` opens MLflow on the runs.
SHELL := /bin/bash
export PATH := $(CURDIR)/.venv/bin:$(PATH)
export DVC_NO_ANALYTICS := 1
export HF_HUB_OFFLINE := 1
MLFLOW_URI ?= $(if $(MLFLOW_TRACKING_URI),$(MLFLOW_TRACKING_URI),sqlite:///$(CURDIR)/mlflow.db)

.PHONY: setup recipe test ui lint
setup:
	bash scripts/setup.sh

recipe: setup
	dvc repro
	@cat metrics/asr/results.md

test: setup
	python -m pytest -q

ui: setup
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow server --backend-store-uri "$(MLFLOW_URI)" \
	  --default-artifact-root "$(CURDIR)/mlartifacts" --host 127.0.0.1 --port 5000 --workers 1

lint: setup
	ruff check .
