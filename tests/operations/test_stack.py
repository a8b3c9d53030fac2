"""The local stack's process handling (on a small real HTTP server), and the real stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from sentinova.stack import (
    PidRecord,
    Service,
    StackConfig,
    StackError,
    down,
    read_pid_record,
    services,
    start_services,
    stop_service,
    up,
)
from tests.operations.conftest import Stack, free_port


def http_service(port: int, name: str = "static") -> Service:
    """Return a service that is a plain HTTP file server on loopback."""
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    url = f"http://127.0.0.1:{port}/"
    return Service(name, argv, port=port, health_url=url, address=url, ready_timeout=30)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def config(tmp_path: Path) -> StackConfig:
    return StackConfig(home=tmp_path)


def test_a_started_service_answers_and_its_pid_file_names_it(config):
    port = free_port()

    [state] = start_services(config, [http_service(port)])

    record = read_pid_record(config.run_dir / "static.pid")
    assert state.action == "started"
    assert record.pid == state.pid and record.is_running()
    assert httpx.get(f"http://127.0.0.1:{port}/").status_code == 200
    stop_service(config, "static")


def test_starting_twice_starts_nothing_new(config):
    port = free_port()
    [first] = start_services(config, [http_service(port)])

    [second] = start_services(config, [http_service(port)])

    assert second.action == "already running"
    assert second.pid == first.pid
    stop_service(config, "static")


def test_a_stale_pid_file_is_replaced_by_a_new_process(config):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    config.run_dir.mkdir(parents=True)
    (config.run_dir / "static.pid").write_text(json.dumps(
        {"pid": dead.pid, "start_ticks": 1, "argv": ["gone"], "address": None}))
    port = free_port()

    [state] = start_services(config, [http_service(port)])

    assert state.action == "started"
    assert state.pid != dead.pid
    assert read_pid_record(config.run_dir / "static.pid").pid == state.pid
    stop_service(config, "static")


def test_a_reused_pid_is_not_taken_for_the_service(config):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        record = PidRecord(other.pid, start_ticks=1, argv=["something else"], address=None)

        assert not record.is_running()
        config.run_dir.mkdir(parents=True)
        (config.run_dir / "static.pid").write_text(json.dumps(record.__dict__))
        assert stop_service(config, "static").action.startswith("was not running")
        assert alive(other.pid)
    finally:
        other.kill()
        other.wait()


def test_stop_ends_the_service_and_every_child_it_spawned(config):
    port = free_port()
    # A shell that starts the server as its child: stopping must reach the grandchild too.
    argv = ["/bin/sh", "-c",
            f"{sys.executable} -m http.server {port} --bind 127.0.0.1 & wait"]
    service = Service("family", argv, port=port, health_url=f"http://127.0.0.1:{port}/",
                      ready_timeout=30)
    [state] = start_services(config, [service])
    children = subprocess.run(["pgrep", "-g", str(state.pid)], capture_output=True,
                              text=True).stdout.split()
    assert len(children) >= 2

    stopped = stop_service(config, "family")

    assert stopped.action == "stopped"
    time.sleep(0.5)
    assert not any(alive(int(pid)) for pid in children)
    assert not (config.run_dir / "family.pid").exists()


def test_a_taken_port_is_refused_with_a_clear_message(config):
    port = free_port()
    [holder] = start_services(config, [http_service(port, name="holder")])

    with pytest.raises(StackError, match=f"port {port} on 127.0.0.1 is taken"):
        start_services(config, [http_service(port)])
    assert read_pid_record(config.run_dir / "holder.pid").pid == holder.pid
    stop_service(config, "holder")


def test_a_service_that_dies_while_starting_reports_its_log(config):
    service = Service("broken", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"],
                      health_url="http://127.0.0.1:9/", ready_timeout=30)

    with pytest.raises(StackError, match=r"(?s)broken exited with code 3.*boom"):
        start_services(config, [service])
    assert not (config.run_dir / "broken.pid").exists()


def test_down_without_up_stops_nothing_and_says_so(config):
    states = down(config)

    assert {s.name for s in states} == {s.name for s in services(config)}
    assert all(s.action == "not running" for s in states)


@pytest.mark.slow
def test_up_started_every_service_on_loopback(stack: Stack):
    pids = {p.stem: read_pid_record(p) for p in (stack.home / "run").glob("*.pid")}

    assert set(pids) == {"prefect-server", "worker-cpu", "worker-gpu", "mlflow", "webhook"}
    assert all(record.is_running() for record in pids.values())
    assert httpx.get(f"{stack.api_url}/health").json() is True
    assert httpx.get(f"{stack.config.mlflow_url}/health").status_code == 200
    pools = {p["name"]: p["type"] for p in stack.api("POST", "/work_pools/filter").json()}
    assert pools == {"cpu": "process", "gpu": "process"}
    workers = {p: [w["name"] for w in stack.api("POST", f"/work_pools/{p}/workers/filter",
                                                 json={}).json()] for p in ("cpu", "gpu")}
    assert workers == {"cpu": ["sentinova-cpu"], "gpu": ["sentinova-gpu"]}
    assert (stack.home / "prefect" / "prefect.db").is_file()


@pytest.mark.slow
def test_second_up_starts_nothing_new(stack: Stack):
    before = {p.stem: read_pid_record(p).pid for p in (stack.home / "run").glob("*.pid")}

    states = up(stack.config)

    assert all(s.action == "already running" for s in states)
    assert {s.name: s.pid for s in states} == {k: v for k, v in before.items() if k != "webhook"}


@pytest.mark.slow
def test_up_then_down_leaves_no_process_behind(tmp_path: Path):
    config = StackConfig(home=tmp_path, prefect_port=free_port(), mlflow_port=free_port(),
                         mlflow_tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        states = up(config)
        assert [s.action for s in states] == ["started"] * 4
        family = [int(pid) for s in states for pid in subprocess.run(
            ["pgrep", "-g", str(s.pid)], capture_output=True, text=True).stdout.split()]
    finally:
        stopped = down(config)

    assert [s.action for s in stopped] == ["stopped"] * 4
    time.sleep(1)
    assert len(family) >= 4
    assert [pid for pid in family if alive(pid)] == []
    assert list((tmp_path / "run").glob("*.pid")) == []
