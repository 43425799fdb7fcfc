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
	python -m slam.cli import --tracking-uri "$(MLFLOW_URI)"
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false mlflow server --backend-store-uri "$(MLFLOW_URI)" \
	  --default-artifact-root "$(CURDIR)/mlartifacts" --host 127.0.0.1 --port 5000 --workers 1

lint: setup
	ruff check .

# The paper's tables from the MLflow runs (specs: params/tables.yaml) into tables/.
.PHONY: tables grid ablation grid-start
tables: setup
	python -m slam.cli import --tracking-uri "$(MLFLOW_URI)"
	python -m slam.cli tables --tracking-uri "$(MLFLOW_URI)"

# The Table I grid (2 Whisper encoders x 3 LLMs = 6 runs), queued as DVC experiments, not run;
# `make grid-start` runs the queue. zoo/prepare/cache/baseline come from DVC's run-cache
# wherever their deps and params match. Extra overrides for every run: GRID_ARGS="-S k=v".
GRID_ENCODERS ?= whisper_tiny_en whisper_base
GRID_LLMS ?= smollm2_135m_instruct gemma3_270m qwen2_5_coder_0_5b_instruct
GRID_ARGS ?=
grid: setup
	for e in $(GRID_ENCODERS); do for l in $(GRID_LLMS); do \
	  dvc exp run --queue -S encoder=$$e -S llm=$$l $(GRID_ARGS) || exit 1; \
	done; done
	dvc queue status

# The ablation rows of tables/ablation.md beyond the default recipe (8 runs), queued the same way.
ABLATIONS ?= projector.k=3 projector.k=10 projector=conv1d projector=qformer projector=window_qformer \
  peft=none peft=prefix peft=full
ablation: setup
	for a in $(ABLATIONS); do dvc exp run --queue -S $$a $(GRID_ARGS) || exit 1; done
	dvc queue status

# Queued runs work in temporary copies of the repo: point them at this repo's store (a SQLite
# store keeps its artifacts beside it, so they land in this repo's mlartifacts/ too).
grid-start: setup
	MLFLOW_TRACKING_URI="$(MLFLOW_URI)" dvc queue start
