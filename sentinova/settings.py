"""Typed settings: one home for local state, read from the environment (SENTINOVA_*)."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

LABELS: tuple[str, str, str] = ("negative", "neutral", "positive")


class Settings(BaseSettings):
    """Where Sentinova keeps its state and which backends it talks to."""

    model_config = SettingsConfigDict(env_prefix="SENTINOVA_", extra="ignore")

    home: Path = Path(".sentinova")
    warehouse: Literal["duckdb", "snowflake"] = "duckdb"
    snowflake_connector_block: str = "sentinova-snowflake"
    model_name: str = "sentinova-sentiment"
    experiment: str = "sentinova"
    champion_alias: str = "champion"

    @property
    def duckdb_path(self) -> Path:
        return self.home / "warehouse.duckdb"

    @property
    def mlflow_tracking_uri(self) -> str:
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @property
    def artifact_root(self) -> Path:
        return (self.home / "mlartifacts").resolve()

    @property
    def prefect_home(self) -> Path:
        return (self.home / "prefect").resolve()


@lru_cache
def get_settings() -> Settings:
    """Return the process-wide settings, creating the home folder on first use."""
    settings = Settings()
    settings.home.mkdir(parents=True, exist_ok=True)
    return settings


def configure_environment() -> None:
    """Set quiet, local defaults: Prefect's state under SENTINOVA_HOME, no telemetry."""
    if "PREFECT_HOME" not in os.environ:
        # Read directly, so a bad setting elsewhere is reported by the command, not at import.
        home = Path(os.environ.get("SENTINOVA_HOME") or ".sentinova")
        prefect_home = (home / "prefect").resolve()
        prefect_home.mkdir(parents=True, exist_ok=True)
        os.environ["PREFECT_HOME"] = str(prefect_home)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    # A busy 2-core machine can take longer than Prefect's default 20 s to start its API.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def configure_mlflow() -> str:
    """Point MLflow at SENTINOVA_HOME's sqlite store (or MLFLOW_TRACKING_URI); return it."""
    import mlflow

    settings = get_settings()
    uri = os.environ.get("MLFLOW_TRACKING_URI") or settings.mlflow_tracking_uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if mlflow.get_experiment_by_name(settings.experiment) is None:
        mlflow.create_experiment(
            settings.experiment, artifact_location=settings.artifact_root.as_uri()
        )
    mlflow.set_experiment(settings.experiment)
    return uri
