# promptgate: `make help` lists every target.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
TOOLS_VENV ?= .venv-tools
PY := $(VENV)/bin/python
MLFLOW_PORT ?= 5000
STATE_DIR ?= .promptgate
ARGS ?=
IMG ?= promptgate-jobs:dev
export PROMPTGATE_STATE_DIR := $(STATE_DIR)
export MLFLOW_TRACKING_URI ?= http://127.0.0.1:$(MLFLOW_PORT)
# Stages send the same LLM requests every run (jobs/launch/launchers.py: STAGE_ENV).
export PYTHONHASHSEED := 0

##@ General
.PHONY: help
help: ## Show this help
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make \033[36m<target>\033[0m\n"} /^[a-zA-Z_-]+:.*?##/ { printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Setup
.PHONY: install
install: $(VENV)/.installed ## Create .venv from the lock file with uv (installs uv if missing)

$(VENV)/.installed: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@UV=$$(command -v uv || echo "python3 -m uv"); $$UV sync --frozen --extra test --compile-bytecode --python python3
	@touch $@

.PHONY: tools
tools: $(TOOLS_VENV)/.installed ## Install the manifest and image checkers (checkov, hadolint, kubernetes-validate) into .venv-tools

$(TOOLS_VENV)/.installed: tools/requirements.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@UV=$$(command -v uv || echo "python3 -m uv"); $$UV venv --quiet --allow-existing --python python3 $(TOOLS_VENV) && $$UV pip sync --quiet --compile-bytecode --python $(TOOLS_VENV)/bin/python tools/requirements.lock
	@touch $@

##@ Local MLflow
.PHONY: mlflow-up mlflow-down ui
mlflow-up: install ## Start (or reuse) the local MLflow server on 127.0.0.1:$(MLFLOW_PORT)
	@$(PY) -m jobs.core.servers mlflow-up --port $(MLFLOW_PORT) --state-dir $(STATE_DIR)

mlflow-down: ## Stop the local MLflow server that mlflow-up started
	@$(PY) -m jobs.core.servers mlflow-down --port $(MLFLOW_PORT) --state-dir $(STATE_DIR)

ui: ## Print the MLflow UI URL
	@$(PY) -m jobs.core.servers ui --port $(MLFLOW_PORT)

##@ Pipeline
.PHONY: run stage rollback sim dataset
run: install mlflow-up ## Run the whole pipeline locally (simulator unless OPENAI_API_KEY is set); ARGS="key=value ..."
	@$(PY) -m jobs.pipeline $(ARGS)

stage: install ## Run one stage: make stage STAGE=evaluate ARGS="pipeline_id=..."
	@$(PY) -m jobs.$(STAGE) $(ARGS)

rollback: install ## Move production back to the version recorded before the last promotion
	@$(PY) -m jobs.gate gate.rollback=true $(ARGS)

sim: install ## Run the OpenAI-compatible simulator in the foreground (ARGS="--port 8088")
	@$(PY) -m jobs.sim $(ARGS)

FILE ?=
NAME ?=
dataset: install mlflow-up ## Create or update an MLflow evaluation dataset from a JSONL file: make dataset FILE=x.jsonl NAME=my-train ARGS="experiment=..."
	@$(PY) -m jobs.datasets push $(FILE) --name $(NAME) $(ARGS)

##@ Production
.PHONY: traffic monitor
DRIFT ?=
traffic: install mlflow-up ## Simulated production: the agent under the production alias answers fresh questions; DRIFT=1 makes it worse
	@$(PY) -m jobs.traffic $(if $(DRIFT),traffic.drift=true) $(ARGS)

monitor: install mlflow-up ## Score production traces since the last checkpoint with the gate's judge; exit 3 on a significant drop
	@$(PY) -m jobs.monitor $(ARGS)

##@ Test
.PHONY: test test-fast lint browser
TEST_WORKERS ?= 2
test: install tools browser lint ## Run the linter and every test (unit, integration on real local servers, end to end); TEST_WORKERS=1 runs them in one process
	@$(PY) -m pytest $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile) $(ARGS)

browser: ## Install Debian's chromium and chromium-driver for the UI test (needs apt and root; skipped if present)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	  echo "warning: no chromium/chromedriver and no way to install them here; the browser test will skip"

lint: install ## Check the code with ruff (rules in pyproject.toml)
	@$(VENV)/bin/ruff check .

test-fast: install ## Run the unit tests only: no servers, no .venv-tools, under a minute
	@$(PY) -m pytest -m "not integration and not slow and not tools" $(ARGS)

LLAMACPP_VENV ?= .llamacpp
.PHONY: test-llamacpp
test-llamacpp: install ## Opt-in, not in make test: a real llama.cpp server (SmolLM2-135M) through register..align; first build ~9 min
	@tools/llamacpp/install.sh $(LLAMACPP_VENV)
	@PROMPTGATE_LLAMACPP=1 PROMPTGATE_LLAMACPP_VENV=$(LLAMACPP_VENV) $(PY) -m pytest tests/llamacpp -s -p no:cacheprovider $(ARGS)

##@ Cluster
OVERLAY ?= dev
LAUNCHER ?= kubernetes
MLFLOW_IMG ?= promptgate-mlflow:dev
.PHONY: image push deploy undeploy pipeline job
image: ## Build the jobs and MLflow images (needs a Docker engine): make image IMG=registry/promptgate-jobs:tag
	docker build -f docker/jobs.Dockerfile -t $(IMG) .
	docker build -f docker/mlflow.Dockerfile -t $(MLFLOW_IMG) .

push: ## Push both images
	docker push $(IMG)
	docker push $(MLFLOW_IMG)

deploy: ## Apply an overlay (OVERLAY=dev|prod); copy its *.env.example files to *.env first
	@for f in k8s/overlays/$(OVERLAY)/*.env.example; do [ -f "$${f%.example}" ] || { echo "error: $${f%.example} is missing; copy $$f and fill it in"; exit 2; }; done
	kubectl apply -k k8s/overlays/$(OVERLAY)

undeploy: ## Delete an overlay's objects (OVERLAY=dev|prod)
	kubectl delete -k k8s/overlays/$(OVERLAY) --ignore-not-found

pipeline: install ## Run the seven stages as Kubernetes Jobs (LAUNCHER=kubernetes) under one pipeline id; ARGS="..."
	@$(PY) -m jobs.pipeline launcher=$(LAUNCHER) $(ARGS)

job: install ## Print a stage's Job YAML: make job STAGE=evaluate ARGS="pipeline_id=x" | kubectl apply -f - (sharded: then MERGE=1; STAGE=monitor: a CronJob)
	@$(PY) -m jobs.launch.render $(STAGE) $(if $(MERGE),--merge) $(ARGS)

##@ Benchmarks
.PHONY: bench bench-gate bench-reliability bench-perf
bench: bench-gate bench-reliability bench-perf ## Run every benchmark

bench-gate: install ## Decision quality of the statistics and the default gate: false promotions and power
	@$(PY) -m bench.gate_bench $(ARGS)

bench-reliability: install ## Cache cold vs warm, a pipeline under 20% faults, and the kill-and-rerun matrix
	@$(PY) -m bench.reliability_bench $(ARGS)

bench-perf: install ## Evaluation speed as ratios: promptgate vs raw mlflow.genai.evaluate, shards, reruns, start-up, make run
	@$(PY) -m bench.perf_bench $(ARGS)

##@ Cleanup
.PHONY: clean
clean: mlflow-down ## Stop the local server and delete local state ($(STATE_DIR))
	rm -rf $(STATE_DIR)
