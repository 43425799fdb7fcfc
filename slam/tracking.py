"""MLflow tracking: one run per trained system; later stages log into the same run.

The store defaults to ``sqlite:///mlflow.db`` in the repository (artifacts in
``mlartifacts/``); ``tracking.uri`` or ``$MLFLOW_TRACKING_URI`` point at a server instead.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import mlflow

from slam.config import SlamConfig, as_dict


def repo_root() -> Path:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=True
        )
        return Path(out.stdout.strip())
    except (subprocess.CalledProcessError, FileNotFoundError):
        return Path.cwd()


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def tracking_uri(cfg: SlamConfig) -> str:
    if cfg.tracking.uri:
        return cfg.tracking.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{repo_root() / 'mlflow.db'}"


def setup_tracking(cfg: SlamConfig) -> str:
    """Point MLflow at the store and the experiment; return the experiment id."""
    mlflow.set_tracking_uri(tracking_uri(cfg))
    experiment = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    if experiment is not None:
        return experiment.experiment_id
    artifacts = None
    if tracking_uri(cfg).startswith("sqlite:"):
        artifacts = (repo_root() / "mlartifacts").as_uri()
    return mlflow.create_experiment(cfg.tracking.experiment, artifact_location=artifacts)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def system_tags(cfg: SlamConfig, system: str) -> dict[str, str]:
    return {
        "recipe": cfg.recipe,
        "system": system,
        "encoder": Path(cfg.encoder.path).name,
        "projector": cfg.projector.name,
        "llm": Path(cfg.llm.path).name,
        "peft": cfg.peft.method,
        "profile": cfg.profile,
        "git_commit": git_commit(),
    }


def start_run(cfg: SlamConfig, system: str, run_id: str | None = None) -> mlflow.ActiveRun:
    """Start (or resume, given ``run_id``) the run of one system, with config and tags."""
    experiment_id = setup_tracking(cfg)
    if run_id:
        return mlflow.start_run(run_id=run_id)
    run = mlflow.start_run(experiment_id=experiment_id, run_name=f"{cfg.recipe}-{system}")
    mlflow.set_tags(system_tags(cfg, system))
    params = {k: str(v)[:500] for k, v in flatten(as_dict(cfg)).items()}
    mlflow.log_params(params)
    mlflow.log_dict(as_dict(cfg), "config.json")
    return run
