"""The local stack: a Prefect server, a worker per work pool and the MLflow UI, on loopback."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import httpx

from sentinova.settings import get_settings

logger = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
WORK_POOLS: tuple[str, ...] = ("cpu", "gpu")
REPO_ROOT = Path(__file__).resolve().parent.parent


class StackError(RuntimeError):
    """A service of the stack could not be started or stopped; the message says why."""


@dataclass(frozen=True)
class Service:
    """One long-running process of the stack and how to tell that it is ready."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    port: int | None = None
    health_url: str | None = None
    address: str | None = None
    ready_timeout: float = 120.0
    ready_check: Callable[[], bool] | None = None

    def is_ready(self) -> bool:
        """Return whether the service answers: its own check, else its health URL, else yes."""
        if self.ready_check is not None:
            return self.ready_check()
        return self.health_url is None or _http_ok(self.health_url)


@dataclass(frozen=True)
class ServiceState:
    """What `up` or `down` did with one service."""

    name: str
    pid: int | None
    action: str
    address: str | None = None


@dataclass(frozen=True)
class StackConfig:
    """Where the stack keeps its state and which loopback ports it listens on."""

    home: Path
    host: str = LOOPBACK
    prefect_port: int = 4200
    mlflow_port: int = 5000
    pools: tuple[str, ...] = WORK_POOLS
    worker_poll_seconds: float | None = None
    mlflow_tracking_uri: str | None = None

    @classmethod
    def from_settings(cls, **overrides: object) -> StackConfig:
        """Return a config rooted at SENTINOVA_HOME, with any overrides applied."""
        home = get_settings().home.resolve()
        return cls(home=home, **overrides)  # type: ignore[arg-type]

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def prefect_url(self) -> str:
        return f"http://{self.host}:{self.prefect_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.host}:{self.mlflow_port}"


def _proc_start_ticks(pid: int) -> int | None:
    """Return the kernel's start time of a process (Linux /proc), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may hold spaces or parentheses: the fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return -1
    return int(fields[19])


def pid_alive(pid: int) -> bool:
    """Return whether a process with this pid exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _proc_start_ticks(pid) != -1


@dataclass(frozen=True)
class PidRecord:
    """The content of a PID file: the process, its start time and how it was started."""

    pid: int
    start_ticks: int | None
    argv: list[str]
    address: str | None

    def is_running(self) -> bool:
        """Return whether this very process (not a later one reusing its pid) still runs."""
        if not pid_alive(self.pid):
            return False
        ticks = _proc_start_ticks(self.pid)
        return self.start_ticks is None or ticks is None or ticks == self.start_ticks


def _pid_file(config: StackConfig, name: str) -> Path:
    return config.run_dir / f"{name}.pid"


def read_pid_record(path: Path) -> PidRecord | None:
    """Return the record in a PID file, or None if it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
        return PidRecord(int(data["pid"]), data.get("start_ticks"), list(data.get("argv", [])),
                         data.get("address"))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_pid_record(path: Path, record: PidRecord) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record.__dict__))
    tmp.replace(path)


def _port_is_free(host: str, port: int) -> bool:
    """Return whether nothing listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _wait_until_ready(service: Service, proc: subprocess.Popen, log_path: Path) -> None:
    """Block until the service passes its readiness check; raise StackError if it dies."""
    deadline = time.monotonic() + service.ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"{service.name} exited with code {proc.returncode} while starting;"
                             f" last lines of {log_path}:\n{_log_tail(log_path)}")
        if service.is_ready():
            return
        time.sleep(0.5)
    _terminate_group(proc.pid)
    raise StackError(f"{service.name} was not ready after {service.ready_timeout:.0f} s; "
                     f"see {log_path}:\n{_log_tail(log_path)}")


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False


def _running_state(config: StackConfig, service: Service) -> ServiceState | None:
    """Return the state of a service its PID file names as alive; drop a stale PID file."""
    pid_path = _pid_file(config, service.name)
    record = read_pid_record(pid_path)
    if record is not None and record.is_running():
        return ServiceState(service.name, record.pid, "already running", record.address)
    if record is not None or pid_path.exists():
        logger.info("removing stale PID file %s (pid %s is gone)", pid_path,
                    record.pid if record else "unreadable")
        pid_path.unlink(missing_ok=True)
    return None


def _launch(config: StackConfig, service: Service) -> subprocess.Popen:
    """Spawn a service in a session of its own and write its PID file."""
    config.log_dir.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **service.env}
    with open(config.log_dir / f"{service.name}.log", "ab") as log:
        # A session of its own lets `down` stop the service and every child it spawned.
        proc = subprocess.Popen(service.argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=REPO_ROOT,
                                start_new_session=True)
    _write_pid_record(_pid_file(config, service.name),
                      PidRecord(proc.pid, _proc_start_ticks(proc.pid), service.argv,
                                service.address))
    return proc


def start_services(config: StackConfig, batch: list[Service]) -> list[ServiceState]:
    """Start the services of a batch side by side, then wait until each one is ready."""
    running = {service.name: _running_state(config, service) for service in batch}
    for service in batch:
        if running[service.name] is None and service.port is not None \
                and not _port_is_free(config.host, service.port):
            raise StackError(f"port {service.port} on {config.host} is taken by another "
                             f"process; choose another port for {service.name}")

    launched = [(service, running[service.name] or _launch(config, service))
                for service in batch]
    states = []
    failures = []
    for service, proc in launched:
        if isinstance(proc, ServiceState):
            states.append(proc)
            continue
        try:
            _wait_until_ready(service, proc, config.log_dir / f"{service.name}.log")
        except StackError as exc:
            _pid_file(config, service.name).unlink(missing_ok=True)
            failures.append(str(exc))
            continue
        states.append(ServiceState(service.name, proc.pid, "started", service.address))
    if failures:
        raise StackError("\n".join(failures))
    return states


def _terminate_group(pid: int, grace: float = 20.0) -> None:
    """Send SIGTERM to the process group led by pid, then SIGKILL what is left after grace."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            waited = 0
        if waited == pid or not pid_alive(pid):
            break
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_service(config: StackConfig, name: str) -> ServiceState:
    """Stop the process named by a service's PID file, if it is still the one `up` started."""
    pid_path = _pid_file(config, name)
    record = read_pid_record(pid_path)
    if record is None:
        pid_path.unlink(missing_ok=True)
        return ServiceState(name, None, "not running")
    if not record.is_running():
        pid_path.unlink(missing_ok=True)
        return ServiceState(name, record.pid, "was not running (stale PID file removed)")
    _terminate_group(record.pid)
    pid_path.unlink(missing_ok=True)
    return ServiceState(name, record.pid, "stopped")


def _child_env(config: StackConfig) -> dict[str, str]:
    """Return the environment every service shares: one Prefect home, one Sentinova home."""
    env = {
        "SENTINOVA_HOME": str(config.home),
        "PREFECT_HOME": str(config.home / "prefect"),
        "PREFECT_API_URL": config.prefect_api_url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "MLFLOW_TRACKING_URI": config.mlflow_tracking_uri
        or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{config.home / 'mlflow.db'}",
    }
    return env


def prefect_server_service(config: StackConfig) -> Service:
    """Return the Prefect server: API and UI on loopback, sqlite under SENTINOVA_HOME."""
    db = config.home / "prefect" / "prefect.db"
    env = {**_child_env(config),
           "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{db}",
           "PREFECT_SERVER_API_HOST": config.host,
           "PREFECT_SERVER_API_PORT": str(config.prefect_port),
           "PREFECT_UI_API_URL": config.prefect_api_url}
    env.pop("PREFECT_API_URL")
    argv = [sys.executable, "-m", "prefect", "server", "start", "--host", config.host,
            "--port", str(config.prefect_port), "--no-prompt"]
    return Service("prefect-server", argv, env, config.prefect_port,
                   f"{config.prefect_api_url}/health", config.prefect_url)


def worker_service(config: StackConfig, pool: str) -> Service:
    """Return a worker polling one work pool (its type comes from the pool on the server)."""
    env = _child_env(config)
    if config.worker_poll_seconds is not None:
        env["PREFECT_WORKER_QUERY_SECONDS"] = str(config.worker_poll_seconds)
    argv = [sys.executable, "-m", "prefect", "--no-prompt", "worker", "start", "--pool", pool,
            "--name", worker_name(pool), "--no-create-pool-if-not-found"]
    since = datetime.now(timezone.utc)
    return Service(f"worker-{pool}", argv, env, address=f"work pool '{pool}'",
                   ready_check=lambda: _worker_online(config, pool, since))


def worker_name(pool: str) -> str:
    """Return the name `up` gives the worker of a pool."""
    return f"sentinova-{pool}"


def mlflow_ui_service(config: StackConfig) -> Service:
    """Return the MLflow tracking server and UI over the sqlite store of the settings."""
    # The job runner serves MLflow's GenAI jobs, which Sentinova does not use; it costs
    # eight processes.
    env = {**_child_env(config), "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    artifacts = (config.home / "mlartifacts").as_uri()
    argv = [sys.executable, "-m", "mlflow", "server",
            "--backend-store-uri", env["MLFLOW_TRACKING_URI"],
            "--default-artifact-root", artifacts,
            "--host", config.host, "--port", str(config.mlflow_port), "--workers", "1"]
    return Service("mlflow", argv, env, config.mlflow_port, f"{config.mlflow_url}/health",
                   config.mlflow_url)


def _call(client: httpx.Client, method: str, path: str, **kwargs: object) -> httpx.Response:
    """Send a request, retrying while a busy sqlite-backed server answers 503."""
    for attempt in range(5):
        response = client.request(method, path, **kwargs)
        if response.status_code != 503:
            return response
        time.sleep(1 + attempt)
    return response


def ensure_work_pools(config: StackConfig) -> list[str]:
    """Create each missing work pool as a local process pool; return the names created."""
    from prefect.workers.process import ProcessWorker

    template = ProcessWorker.get_default_base_job_template()
    created = []
    with httpx.Client(base_url=config.prefect_api_url, timeout=30.0) as client:
        for pool in config.pools:
            if _call(client, "GET", f"/work_pools/{pool}").status_code == 200:
                continue
            response = _call(client, "POST", "/work_pools/", json={
                "name": pool, "type": "process", "base_job_template": template,
                "description": f"Sentinova's {pool} pool (local processes)"})
            if response.status_code not in (201, 409):
                raise StackError(f"could not create work pool {pool!r}: "
                                 f"HTTP {response.status_code} {response.text[:200]}")
            created.append(pool)
    return created


def _worker_online(config: StackConfig, pool: str, since: datetime) -> bool:
    """Return whether the named worker has sent a heartbeat to the server after `since`."""
    try:
        response = httpx.post(f"{config.prefect_api_url}/work_pools/{pool}/workers/filter",
                              json={}, timeout=5.0)
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    return any(w["name"] == worker_name(pool) and w.get("last_heartbeat_time")
               and datetime.fromisoformat(w["last_heartbeat_time"]) >= since
               for w in response.json())


def webhook_service(config: StackConfig, port: int) -> Service:
    """Return the webhook that turns signed notices into Prefect events."""
    argv = [sys.executable, "-m", "sentinova.cli_ops", "webhook", "--host", config.host,
            "--port", str(port), "--api-url", config.prefect_api_url]
    url = f"http://{config.host}:{port}"
    return Service("webhook", argv, _child_env(config), port, f"{url}/health",
                   f"{url}/notices")


def services(config: StackConfig) -> list[Service]:
    """Return the stack's services in start order."""
    return [prefect_server_service(config),
            *(worker_service(config, pool) for pool in config.pools),
            mlflow_ui_service(config)]


def up(config: StackConfig, extra: list[Service] | None = None) -> list[ServiceState]:
    """Start whatever part of the stack is not running yet and return what each service did."""
    config.run_dir.mkdir(parents=True, exist_ok=True)
    server, *workers, mlflow_ui = services(config)
    states = start_services(config, [server, mlflow_ui])
    if states[0].address != config.prefect_url:
        raise StackError(f"a Prefect server of this stack already runs at {states[0].address};"
                         " run `sentinova down` before changing ports")
    (config.run_dir / "stack.json").write_text(json.dumps(
        {"prefect_url": config.prefect_url, "prefect_api_url": config.prefect_api_url,
         "mlflow_url": config.mlflow_url, "pools": list(config.pools)}))

    ensure_work_pools(config)
    states[1:1] = start_services(config, workers)
    states += start_services(config, extra or [])
    return states


def down(config: StackConfig) -> list[ServiceState]:
    """Stop every service whose PID file `up` wrote, in reverse start order."""
    names = [s.name for s in services(config)]
    found = {p.stem for p in config.run_dir.glob("*.pid")} if config.run_dir.exists() else set()
    extra = sorted(found - set(names))
    states = [stop_service(config, name) for name in reversed(names + extra)]
    (config.run_dir / "stack.json").unlink(missing_ok=True)
    return states


def recorded_api_url(home: Path | None = None) -> str | None:
    """Return the Prefect API URL the running stack recorded, or None if no stack is up."""
    home = (home or get_settings().home).resolve()
    try:
        return json.loads((home / "run" / "stack.json").read_text())["prefect_api_url"]
    except (OSError, ValueError, KeyError):
        return None
