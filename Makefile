# Two commands do everything on a fresh machine: `make run` and `make test`.
# Each first creates .venv and installs the pinned requirements when they are missing.
PYTHON ?= python3
VENV ?= .venv
SHARED ?= ../shared
DATA := $(SHARED)/data
BIN := $(VENV)/bin
STAMP := $(VENV)/.sentinova-installed
UV := $(BIN)/uv

AIRFLOW_VENV := .venv-airflow

.PHONY: run test test-all test-slow test-ops env clean-state

$(STAMP): requirements.txt requirements-test.txt requirements-nodeps.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet uv==0.13.9
	$(UV) pip install --quiet --python $(BIN)/python -r requirements.txt -r requirements-test.txt
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -r requirements-nodeps.txt
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

env: $(STAMP)

run: $(STAMP)
	$(BIN)/sentinova run \
	  --input $(DATA)/tweets/semeval2017_sentiment_train.jsonl \
	  --validation $(DATA)/tweets/tweeteval_sentiment_validation.jsonl \
	  --extra-eval $(DATA)/tweets/airline_sentiment.jsonl \
	  --suite $(DATA)/checklist/sentiment_suite.json

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

# The slow tests outside tests/operations (a redeploy, the serving image's entry script).
test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow --ignore=tests/operations -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

$(AIRFLOW_VENV)/bin/airflow: deployments/airflow/requirements.txt deployments/airflow/constraints.txt $(STAMP)
	$(UV) venv --quiet --python 3.11 $(AIRFLOW_VENV)
	$(UV) pip install --quiet --python $(AIRFLOW_VENV)/bin/python \
	  -r deployments/airflow/requirements.txt -c deployments/airflow/constraints.txt

# The operations integration tests: a real Prefect server, deployments, workers, the webhook
# trigger and the Airflow DAG's dag.test() (about 20 minutes on 2 cores).
test-ops: $(STAMP) $(AIRFLOW_VENV)/bin/airflow
	$(BIN)/python -m pytest tests/operations -q

clean-state:
	rm -rf .sentinova
