"""Airflow DAG `sentinova`: run the Prefect deployments etl, train and deploy, in order.

Each task starts a flow run over Prefect's REST API and waits for it; a run that ends Failed,
Crashed or Cancelled fails the task, and the log names the run's page in the Prefect UI. The
API URL comes from the Airflow connection `prefect_api` or else the Variable
`prefect_api_url`. This file needs only Airflow and httpx: Prefect itself is not imported.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime, timedelta
from typing import Any

import httpx
from airflow.sdk import DAG, BaseHook, BaseOperator, Param, Variable
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowNotFoundException

logger = logging.getLogger(__name__)

CONNECTION_ID = "prefect_api"
VARIABLE_KEY = "prefect_api_url"
TERMINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
FAILED_STATES = {"FAILED", "CRASHED", "CANCELLED"}
RETRY_STATUSES = {429, 502, 503, 504}


def prefect_api() -> tuple[str, httpx.Auth | None, dict[str, str]]:
    """Return the Prefect API URL, with its credentials, from the connection or the Variable."""
    try:
        conn = BaseHook.get_connection(CONNECTION_ID)
    except AirflowNotFoundException:
        conn = None
    if conn is not None and conn.host:
        if "://" in conn.host:
            url = conn.host
        else:
            port = f":{conn.port}" if conn.port else ""
            url = f"http://{conn.host}{port}/{(conn.schema or 'api').strip('/')}"
        # A login means HTTP basic auth (PREFECT_SERVER_API_AUTH_STRING); a password alone is
        # an API key.
        if conn.login:
            return url.rstrip("/"), httpx.BasicAuth(conn.login, conn.password or ""), {}
        if conn.password:
            return url.rstrip("/"), None, {"Authorization": f"Bearer {conn.password}"}
        return url.rstrip("/"), None, {}
    url = Variable.get(VARIABLE_KEY, default=None)
    if not url:
        raise AirflowFailException(
            f"no Prefect API URL: define the connection '{CONNECTION_ID}' "
            f"(e.g. http://127.0.0.1:4200/api) or the Variable '{VARIABLE_KEY}'")
    return str(url).rstrip("/"), None, {}


def flow_run_url(api_url: str, flow_run_id: str) -> str:
    """Return the page of a flow run in the Prefect UI served beside the API."""
    base = api_url[: -len("/api")] if api_url.endswith("/api") else api_url
    return f"{base}/runs/flow-run/{flow_run_id}"


class PrefectDeploymentRunOperator(BaseOperator):
    """Start a run of a Prefect deployment and wait until it reaches a terminal state."""

    template_fields = ("deployment", "parameters")

    def __init__(self, *, deployment: str, parameters: dict[str, Any] | str | None = None,
                 poll_seconds: float = 5.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.deployment = deployment
        self.parameters = parameters
        self.poll_seconds = poll_seconds
        self._flow_run_id: str | None = None
        self._client: httpx.Client | None = None

    def _call(self, client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send a request, retrying briefly while the server answers busy (sqlite locks)."""
        for attempt in range(6):
            try:
                response = client.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                if attempt == 5:
                    raise AirflowException(f"Prefect API unreachable: {exc}") from exc
            else:
                if response.status_code not in RETRY_STATUSES or attempt == 5:
                    return response
            time.sleep(2 ** attempt)
        raise AssertionError("unreachable")

    def _deployment_id(self, client: httpx.Client) -> str:
        """Return the id of the deployment named `flow/deployment` or just `deployment`."""
        if "/" in self.deployment:
            response = self._call(client, "GET", f"/deployments/name/{self.deployment}")
            if response.status_code == 404:
                raise AirflowFailException(f"no Prefect deployment {self.deployment!r}")
            response.raise_for_status()
            return response.json()["id"]
        response = self._call(client, "POST", "/deployments/filter", json={
            "deployments": {"name": {"any_": [self.deployment]}}})
        response.raise_for_status()
        found = response.json()
        if len(found) != 1:
            raise AirflowFailException(f"{len(found)} Prefect deployments are named "
                                       f"{self.deployment!r}; name it as flow/deployment")
        return found[0]["id"]

    def execute(self, context: Any) -> dict[str, str]:
        api_url, auth, headers = prefect_api()
        parameters = self.parameters or {}
        if not isinstance(parameters, dict):
            raise AirflowFailException(f"parameters of {self.task_id} must be a JSON object, "
                                       f"got {type(parameters).__name__}")
        ti = context["ti"]
        with httpx.Client(base_url=api_url, auth=auth, headers=headers, timeout=30.0) as client:
            self._client = client
            deployment_id = self._deployment_id(client)
            # One Airflow try makes one flow run, even if the request is sent twice.
            key = f"airflow:{ti.dag_id}:{ti.run_id}:{ti.task_id}:{ti.try_number}"
            response = self._call(client, "POST", f"/deployments/{deployment_id}/create_flow_run",
                                  json={"parameters": parameters, "idempotency_key": key,
                                        "tags": ["airflow", f"airflow-dag:{ti.dag_id}"]})
            if response.status_code in (409, 422):
                raise AirflowFailException(f"Prefect refused the run of {self.deployment!r}: "
                                           f"{response.json().get('detail', response.text)}")
            response.raise_for_status()
            run = response.json()
            self._flow_run_id = run["id"]
            url = flow_run_url(api_url, run["id"])
            logger.info("started Prefect flow run %s of %s: %s", run["name"], self.deployment,
                        url)
            # The flow names its run when it starts (e.g. etl-2026-12-04-semeval): report that.
            run = self._wait(client, run["id"])
        state = run["state"]
        outcome = {"flow_run_id": run["id"], "name": run["name"], "state": state["type"],
                   "url": url}
        if state["type"] in FAILED_STATES:
            raise AirflowException(f"Prefect flow run {run['name']} of {self.deployment!r} ended "
                                   f"{state['name']}: {state.get('message') or 'no message'}; "
                                   f"see {url}")
        logger.info("Prefect flow run %s completed: %s", run["name"], url)
        return outcome

    def _wait(self, client: httpx.Client, flow_run_id: str) -> dict[str, Any]:
        """Poll the flow run until its state is terminal, logging each change; return it."""
        seen = None
        while True:
            response = self._call(client, "GET", f"/flow_runs/{flow_run_id}")
            response.raise_for_status()
            run = response.json()
            state = run["state"]
            if state["name"] != seen:
                logger.info("flow run %s is %s", run["name"], state["name"])
                seen = state["name"]
            if state["type"] in TERMINAL_STATES:
                return run
            time.sleep(self.poll_seconds)

    def on_kill(self) -> None:
        """Cancel the Prefect flow run when Airflow kills the task."""
        if self._flow_run_id is None:
            return
        api_url, auth, headers = prefect_api()
        with httpx.Client(base_url=api_url, auth=auth, headers=headers, timeout=30.0) as client:
            client.post(f"/flow_runs/{self._flow_run_id}/set_state",
                        json={"state": {"type": "CANCELLING"}, "force": True})


with DAG(
    dag_id="sentinova",
    description="Sentinova on Prefect: ETL, then training, then deployment",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    render_template_as_native_obj=True,
    default_args={"retries": 0, "execution_timeout": timedelta(hours=12)},
    params={
        "etl_parameters": Param({}, type="object",
                                description="Parameters of the etl deployment (else its own)"),
        "train_parameters": Param({}, type="object",
                                  description="Parameters of the train deployment"),
        "deploy_parameters": Param({}, type="object",
                                   description="Parameters of the deploy deployment"),
    },
    tags=["sentinova", "prefect"],
) as dag:
    etl = PrefectDeploymentRunOperator(task_id="etl", deployment="etl",
                                       parameters="{{ params.etl_parameters }}")
    train = PrefectDeploymentRunOperator(task_id="train", deployment="train",
                                         parameters="{{ params.train_parameters }}")
    deploy = PrefectDeploymentRunOperator(task_id="deploy", deployment="deploy",
                                          parameters="{{ params.deploy_parameters }}")
    etl >> train >> deploy
