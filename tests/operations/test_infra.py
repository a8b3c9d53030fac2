"""The container images and the base job templates of Docker and Kubernetes work pools."""

from __future__ import annotations

import json
import re

import pytest

from tests.conftest import REPO
from tests.operations.conftest import Stack

POOLS = REPO / "infra" / "pools"
PLACEHOLDER = re.compile(r"\{\{\s*([\w.]+)\s*\}\}")


def template(name: str) -> dict:
    return json.loads((POOLS / f"{name}.json").read_text())


def placeholders(value) -> set[str]:
    """Return every {{ name }} used anywhere in a job configuration."""
    if isinstance(value, str):
        return set(PLACEHOLDER.findall(value))
    if isinstance(value, dict):
        return set().union(*(placeholders(v) for v in value.values()), set())
    if isinstance(value, list):
        return set().union(*(placeholders(v) for v in value), set())
    return set()


@pytest.mark.parametrize("name", ["docker-cpu", "docker-gpu", "kubernetes-cpu",
                                  "kubernetes-gpu"])
def test_every_placeholder_of_a_template_is_a_declared_variable(name):
    tpl = template(name)

    declared = set(tpl["variables"]["properties"])

    assert placeholders(tpl["job_configuration"]) <= declared
    assert all("default" in spec for spec in tpl["variables"]["properties"].values())


def test_the_docker_gpu_template_requests_gpus_through_device_requests():
    tpl = template("docker-gpu")

    [request] = tpl["job_configuration"]["container_create_kwargs"]["device_requests"]

    assert request == {"driver": "nvidia", "count": "{{ gpu_count }}",
                       "capabilities": [["gpu"]]}
    assert tpl["variables"]["properties"]["gpu_count"]["default"] == 1
    assert tpl["variables"]["properties"]["image"]["default"] == "sentinova-gpu:latest"
    assert "device_requests" not in json.dumps(template("docker-cpu"))


def test_the_kubernetes_gpu_template_limits_nvidia_gpus():
    manifest = template("kubernetes-gpu")["job_configuration"]["job_manifest"]

    pod = manifest["spec"]["template"]["spec"]
    [container] = pod["containers"]

    assert container["name"] == "prefect-job"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert pod["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                   "effect": "NoSchedule"}]
    assert "nvidia.com/gpu" not in json.dumps(template("kubernetes-cpu"))


def test_both_images_install_the_same_requirements_and_only_tensorflow_differs():
    cpu = (REPO / "infra" / "Dockerfile.cpu").read_text()
    gpu = (REPO / "infra" / "Dockerfile.gpu").read_text()

    assert "-r requirements.txt" in cpu
    assert "grep -v '^tensorflow-cpu==' requirements.txt > /tmp/requirements-gpu.txt" in gpu
    assert '"tensorflow[and-cuda]==${tf_version}"' in gpu
    assert cpu.split("COPY pyproject.toml")[1] == gpu.split("COPY pyproject.toml")[1]


@pytest.mark.slow
@pytest.mark.parametrize("name, kind", [("docker-gpu", "docker"),
                                        ("kubernetes-gpu", "kubernetes")])
def test_the_server_accepts_a_gpu_template_as_a_work_pool(stack: Stack, name: str, kind: str):
    pool = f"check-{name}"

    response = stack.api("POST", "/work_pools/", json={
        "name": pool, "type": kind, "base_job_template": template(name)})

    assert response.status_code == 201, response.text
    assert response.json()["base_job_template"] == template(name)
    assert stack.api("DELETE", f"/work_pools/{pool}").status_code == 204
