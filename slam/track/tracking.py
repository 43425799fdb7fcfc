"""MLflow tracking: one run per trained system; later stages log into the same run.

The store defaults to ``sqlite:///mlflow.db`` in the repository (artifacts in
``mlartifacts/`` beside it); ``tracking.uri`` or ``$MLFLOW_TRACKING_URI`` point elsewhere.
Besides config, tags and metrics, the score stage attaches the repository's ``dvc.lock``, so a
run names the exact code, data and params of every stage it came from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import mlflow
import yaml
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from slam.config import SlamConfig, as_dict

log = logging.getLogger(__name__)
# artifact names of the DVC lock a run carries (see log_dvc_lock)
DVC_LOCK_ARTIFACT = "dvc.lock"
DVC_STAGES_ARTIFACT = "dvc_stages.json"


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
    uri = tracking_uri(cfg)
    mlflow.set_tracking_uri(uri)
    return experiment_id_for(MlflowClient(uri), cfg.tracking.experiment, artifact_location(uri))


def experiment_id_for(client: MlflowClient, name: str, location: str | None = None) -> str:
    """The id of experiment ``name``, created (artifacts at ``location``) if it does not exist."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=location)


def artifact_location(uri: str) -> str | None:
    """A SQLite store keeps its artifacts beside it in ``mlartifacts/`` (the repo's for the
    default store; a test's own for a store in a temp dir); a server decides for itself."""
    if not uri.startswith("sqlite:///"):
        return None
    db = Path(uri.removeprefix("sqlite:///"))
    return (db.resolve().parent / "mlartifacts").as_uri()


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


def run_exists(run_id: str) -> bool:
    try:
        MlflowClient().get_run(run_id)
    except MlflowException:
        return False
    return True


def start_run(cfg: SlamConfig, system: str, run_id: str | None = None) -> mlflow.ActiveRun:
    """Start (or resume, given ``run_id``) the run of one system, with config and tags."""
    experiment_id = setup_tracking(cfg)
    if run_id and run_exists(run_id):
        return mlflow.start_run(run_id=run_id)
    if run_id:  # a checkpoint carried to another store (a copied run directory, a new machine)
        log.warning("MLflow run %s is not in %s: logging into a new run", run_id, mlflow.get_tracking_uri())
    run = mlflow.start_run(experiment_id=experiment_id, run_name=f"{cfg.recipe}-{system}")
    mlflow.set_tags(system_tags(cfg, system))
    params = {k: str(v)[:500] for k, v in flatten(as_dict(cfg)).items()}
    mlflow.log_params(params)
    mlflow.log_dict(as_dict(cfg), "config.json")
    return run


def dvc_root() -> Path:
    """The DVC repository a stage runs in: DVC exports ``DVC_ROOT`` to stage commands."""
    return Path(os.environ["DVC_ROOT"]) if os.environ.get("DVC_ROOT") else repo_root()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def dvc_stage_hashes(lock: dict[str, Any], skip: str | None = None) -> dict[str, dict[str, Any]]:
    """Per stage of a parsed dvc.lock: a digest of its whole entry and the hash of each dep/out.

    ``skip`` is the stage running now: its entry is still the previous run's.
    """
    stages: dict[str, dict[str, Any]] = {}
    for name, entry in (lock.get("stages") or {}).items():
        if name == skip or not isinstance(entry, dict):
            continue

        def hashes(items: list[dict[str, Any]] | None) -> dict[str, str | None]:
            # "hash" names the field holding it (md5 locally; etag etc. on remotes)
            return {i["path"]: i.get(i.get("hash", "md5")) for i in items or [] if "path" in i}

        stages[name] = {
            "entry_md5": _md5(json.dumps(entry, sort_keys=True, default=str).encode()),
            "deps": hashes(entry.get("deps")),
            "outs": hashes(entry.get("outs")),
        }
    return stages


def log_dvc_lock(root: Path | None = None) -> bool:
    """Attach the repository's dvc.lock to the active run: the file, and its stage hashes.

    A dict artifact and a tag rather than params: params are immutable in MLflow, and a run is
    resumed by later stages that may see a newer lock. No lock (tests, a plain checkout) or an
    unreadable one is not an error: the run is still valid, only less pinned. Returns whether
    a lock was logged.
    """
    path = (root or dvc_root()) / "dvc.lock"
    if not path.is_file():
        return False
    data = path.read_bytes()
    try:
        lock = yaml.safe_load(data) or {}
        stages = dvc_stage_hashes(lock if isinstance(lock, dict) else {}, os.environ.get("DVC_STAGE"))
    except yaml.YAMLError as exc:
        log.warning("%s is not valid YAML (%s): logging it without stage hashes", path, exc)
        stages = {}
    mlflow.log_artifact(str(path))  # lands as "dvc.lock" at the artifact root
    mlflow.log_dict(stages, DVC_STAGES_ARTIFACT)
    mlflow.set_tag("dvc_lock_md5", _md5(data))
    return True
