"""Run the `sentinova` DAG once with dag.test() and exit 0 when it ends in the expected state.

Run inside .venv-airflow with AIRFLOW_HOME set and the connection AIRFLOW_CONN_PREFECT_API
(or the Variable AIRFLOW_VAR_PREFECT_API_URL) naming a running Prefect server.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

DAG_FILE = Path(__file__).resolve().parent / "dags" / "sentinova.py"


def main() -> int:
    """Run the DAG; print each task's final state; return 0 if the run ended as expected."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", default="{}",
                        help="run conf as JSON: etl_parameters, train_parameters, "
                             "deploy_parameters")
    parser.add_argument("--expect", choices=["success", "failed"], default="success")
    args = parser.parse_args()
    try:
        conf = json.loads(args.conf)
    except json.JSONDecodeError as exc:
        print(f"error: --conf is not JSON: {exc}", file=sys.stderr)
        return 2

    spec = importlib.util.spec_from_file_location("sentinova_dag", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    dag_run = module.dag.test(run_conf=conf)

    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    for task_id in module.dag.task_ids:
        print(f"task {task_id}: {states.get(task_id)}")
    print(f"dag run {dag_run.run_id}: {dag_run.state}")
    return 0 if str(dag_run.state) == args.expect else 1


if __name__ == "__main__":
    sys.exit(main())
