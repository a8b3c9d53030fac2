#!/usr/bin/env bash
# Builds .venv-airflow (Airflow 3, apart from Sentinova's .venv) and runs the `sentinova` DAG
# once with dag.test() against a running Prefect server that has Sentinova's deployments.
#
#   sentinova up && prefect --no-prompt deploy --all     # once, from the repository root
#   bash deployments/airflow/test_dag.sh --quick          # small samples, one epoch
#   bash deployments/airflow/test_dag.sh --conf '{"etl_parameters": {"inputs": ["x.jsonl"]}}'
#
# PREFECT_API_URL names the server (default: the stack's http://127.0.0.1:4200/api).
# SHARED is the reference data folder (default: ../shared beside the repository).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${AIRFLOW_VENV:-$repo/.venv-airflow}"
api="${PREFECT_API_URL:-http://127.0.0.1:4200/api}"
shared="${SHARED:-$(cd "$repo/.." && pwd)/shared}"
conf='{}'
expect=success

while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --conf) conf="$2"; shift ;;
    --expect) expect="$2"; shift ;;
    *) echo "error: unknown argument $1 (use --quick, --conf JSON, --expect success|failed)" >&2
       exit 2 ;;
  esac
  shift
done

if [ ! -x "$venv/bin/python" ]; then
  uv="$(command -v uv || echo "$repo/.venv/bin/uv")"
  if [ -x "$uv" ]; then
    "$uv" venv --quiet --python 3.11 "$venv"
    "$uv" pip install --quiet --python "$venv/bin/python" -r "$here/requirements.txt" \
      -c "$here/constraints.txt"
  else
    python3.11 -m venv "$venv"
    "$venv/bin/pip" install --quiet -r "$here/requirements.txt" -c "$here/constraints.txt"
  fi
fi

if ! "$venv/bin/python" -c "import httpx, sys; sys.exit(httpx.get('$api/health').status_code != 200)" \
    2>/dev/null; then
  echo "error: no Prefect server answers at $api; run 'sentinova up' first" >&2
  exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
export AIRFLOW_HOME="$work/airflow"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__DAGS_FOLDER="$here/dags"
export AIRFLOW_CONN_PREFECT_API="$api"

if [ -n "${quick:-}" ]; then
  head -n 300 "$shared/data/tweets/airline_sentiment.jsonl" > "$work/tweets.jsonl"
  head -n 200 "$shared/data/tweets/tweeteval_sentiment_validation.jsonl" > "$work/validation.jsonl"
  conf="{\"etl_parameters\": {\"inputs\": [\"$work/tweets.jsonl\"]},
         \"train_parameters\": {\"validation\": \"$work/validation.jsonl\", \"extra_eval\": [],
                                \"config\": {\"epochs\": 1, \"max_rows\": 300}}}"
fi

"$venv/bin/airflow" db migrate > "$work/db-migrate.log" 2>&1 \
  || { echo "error: airflow db migrate failed; see below" >&2; cat "$work/db-migrate.log" >&2; exit 1; }
"$venv/bin/python" "$here/run_dag_test.py" --conf "$conf" --expect "$expect"
