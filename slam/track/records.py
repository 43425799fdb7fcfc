"""Portable run records: every tracked run a table or a comparison needs, committed to git.

An MLflow store holds the runs of one machine; a record holds one run for every clone. The
score stage writes one per system it scored (``<score.dir>/<recipe>/runs/<system>/``):

    record.json   run id, name, experiment, status, times, tags, params, every metric's
                  history (step, value, timestamp) and a map artifact path -> file
    artifacts/    the run's small artifacts that git holds nowhere else (hypotheses, error
                  lists, the composed config, the DVC stage digests); never weights

Artifacts that the metrics folder already holds (results table, figures, curves) are not
copied: the map points at them. ``import_records`` loads every committed record into a store
(``make ui`` / ``make tables`` run it): idempotent, and a local store keeps each run's id,
so a table cell's run id is the same run on every clone. A server picks ids of its own; the
``slam.record_id`` tag then names the record a run came from.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import mlflow
from mlflow.entities import Metric, Param
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
from mlflow.tracking import MlflowClient

from slam.track.tracking import artifact_location, experiment_id_for
from slam.utils import atomic_dir, atomic_write_json

log = logging.getLogger(__name__)

RECORD_FILE = "record.json"
RECORDS_DIR = "runs"  # under <score.dir>/<recipe>: one folder per system
FORMAT = 1
RECORD_ID_TAG = "slam.record_id"
RECORD_PATH_TAG = "slam.record"  # the record's folder, relative to the repository
# artifacts never copied into a record: weights (the model folder) and the whole lock (its
# per-stage digests are kept as dvc_stages.json)
SKIPPED_ARTIFACTS = ("model/", "dvc.lock")
MAX_ARTIFACT_BYTES = 2_000_000
# MLflow's per-request limits of log_batch
_BATCH_METRICS, _BATCH_PARAMS, _BATCH_TAGS = 1000, 100, 100


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _artifact_files(client: MlflowClient, run_id: str, path: str | None = None) -> Iterator[Any]:
    for info in client.list_artifacts(run_id, path):
        if info.is_dir:
            yield from _artifact_files(client, run_id, info.path)
        else:
            yield info


def export_record(client: MlflowClient, run_id: str, out_dir: str | Path, *,
                  references: list[Path] = ()) -> Path:
    """Write the record of ``run_id`` into ``out_dir`` (replaced whole, atomically).

    ``references``: committed files an artifact may be identical to (the metrics folder's
    table and figures); such an artifact is mapped to the file instead of copied."""
    out_dir = Path(out_dir)
    run = client.get_run(run_id)
    by_digest = {_sha256(p): p for p in map(Path, references) if p.is_file()}
    record: dict[str, Any] = {
        "format": FORMAT,
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "experiment": client.get_experiment(run.info.experiment_id).name,
        "status": run.info.status,
        "start_time": run.info.start_time,
        "end_time": run.info.end_time,
        # MLflow's own tags hold machine facts (user, script path): not for git
        "tags": {k: v for k, v in sorted(run.data.tags.items()) if not k.startswith("mlflow.")},
        "params": dict(sorted(run.data.params.items())),
        "metrics": {key: [[m.step, m.value, m.timestamp] for m in client.get_metric_history(run_id, key)]
                    for key in sorted(run.data.metrics)},
        "artifacts": {},
    }
    with atomic_dir(out_dir) as tmp:
        for info in _artifact_files(client, run_id):
            if info.path.startswith(SKIPPED_ARTIFACTS) or (info.file_size or 0) > MAX_ARTIFACT_BYTES:
                continue
            local = Path(client.download_artifacts(run_id, info.path, str(tmp / ".download")))
            twin = by_digest.get(_sha256(local))
            if twin is not None:
                relative = os.path.relpath(twin.resolve(), out_dir.resolve())
                record["artifacts"][info.path] = Path(relative).as_posix()
            else:
                target = tmp / "artifacts" / info.path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(local, target)
                record["artifacts"][info.path] = f"artifacts/{info.path}"
        shutil.rmtree(tmp / ".download", ignore_errors=True)
        atomic_write_json(tmp / RECORD_FILE, record)
    return out_dir


def load_record(path: str | Path) -> dict[str, Any]:
    """A record (its folder or its record.json), checked for the fields an import needs."""
    path = Path(path)
    path = path / RECORD_FILE if path.is_dir() else path
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"run record {path} is not readable JSON: {exc}") from None
    missing = [k for k in ("format", "run_id", "experiment", "params", "metrics", "tags") if k not in record]
    if missing:
        raise ValueError(f"run record {path} lacks {missing}")
    if record["format"] != FORMAT:
        raise ValueError(f"run record {path} has format {record['format']}, this slam reads {FORMAT}")
    return record


def find_records(root: str | Path = "metrics") -> list[Path]:
    return sorted(Path(root).rglob(RECORD_FILE))


@contextmanager
def _run_id(run_id: str) -> Iterator[None]:
    # MLflow has no API to choose a run's id; a local store takes it from uuid4(). Keeping the
    # recorded id keeps every committed link and table cell pointing at the same run.
    with mock.patch.object(uuid, "uuid4", return_value=uuid.UUID(hex=run_id)):
        yield


@dataclass
class ImportSummary:
    imported: int = 0
    present: int = 0


def _existing(client: MlflowClient, experiment_id: str, record_id: str) -> Any:
    """The store's run of the record (the same id, or on a server the one tagged with it)."""
    try:
        return client.get_run(record_id)
    except Exception:  # noqa: BLE001 - MLflow raises MlflowException or RestException: no such run
        pass
    found = client.search_runs([experiment_id], f"tags.`{RECORD_ID_TAG}` = '{record_id}'", max_results=1)
    return found[0] if found else None


def import_record(client: MlflowClient, path: str | Path, artifact_location: str | None = None) -> bool:
    """Load one record into the store behind ``client``; False if it is there already."""
    path = Path(path)
    folder = path.parent if path.name == RECORD_FILE else path
    record = load_record(folder)
    experiment_id = experiment_id_for(client, record["experiment"], artifact_location)
    present = _existing(client, experiment_id, record["run_id"])
    if present is not None:
        if present.info.status == "RUNNING" and present.data.tags.get(RECORD_ID_TAG):
            raise ValueError(f"run {present.info.run_id} is a half-finished import of {path}: delete it "
                             f"(`mlflow gc` for a local store) and import again")
        return False
    tags = {**record["tags"], RECORD_ID_TAG: record["run_id"]}
    with _run_id(record["run_id"]):
        run = client.create_run(experiment_id, start_time=record.get("start_time"), tags=tags,
                                run_name=record.get("run_name"))
    run_id = run.info.run_id
    params = [Param(k, str(v)) for k, v in record["params"].items()]
    metrics = [Metric(key, float(value), int(ts or 0), int(step or 0))
               for key, history in record["metrics"].items() for step, value, ts in history]
    for i in range(0, len(params), _BATCH_PARAMS):
        client.log_batch(run_id, params=params[i:i + _BATCH_PARAMS])
    for i in range(0, len(metrics), _BATCH_METRICS):
        client.log_batch(run_id, metrics=metrics[i:i + _BATCH_METRICS])
    # the run's own repository, not client.log_artifact: MLflow caches repositories by run id,
    # and the same id may name a run of another store in this process (an export's source)
    repository = get_artifact_repository(run.info.artifact_uri)
    for artifact, relative in record.get("artifacts", {}).items():
        local = folder / relative
        if not local.is_file():
            log.warning("%s: artifact %s not found at %s; skipped", path, artifact, local)
            continue
        parent = str(Path(artifact).parent)
        repository.log_artifact(str(local), None if parent == "." else parent)
    client.set_terminated(run_id, record.get("status") or "FINISHED", end_time=record.get("end_time"))
    return True


def import_records(tracking_uri: str, root: str | Path = "metrics") -> ImportSummary:
    """Every committed record under ``root`` into the store at ``tracking_uri`` (idempotent)."""
    client = MlflowClient(tracking_uri)
    summary = ImportSummary()
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracking_uri)  # a server's mlflow-artifacts: URIs resolve against it
    try:
        for path in find_records(root):
            if import_record(client, path, artifact_location(tracking_uri)):
                summary.imported += 1
            else:
                summary.present += 1
    finally:
        mlflow.set_tracking_uri(previous)
    log.info("records under %s: %d imported into %s, %d there already", root, summary.imported,
             tracking_uri, summary.present)
    return summary
