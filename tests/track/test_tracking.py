"""MLflow runs: a resumed system logs into its run, or into a new one when the store lost it."""

from __future__ import annotations

import logging

import mlflow

from slam.track.tracking import start_run


def test_resume_into_a_store_without_the_run_starts_a_new_run(tiny_cfg, tmp_path, caplog):
    with start_run(tiny_cfg, "llm") as first:
        mlflow.log_metric("loss", 1.0)
    with start_run(tiny_cfg, "llm", run_id=first.info.run_id) as again:  # same store: same run
        mlflow.log_metric("loss", 0.5)
    assert again.info.run_id == first.info.run_id
    # the checkpoint (and its run id) copied beside another store, as a scratch clone does
    tiny_cfg.tracking.uri = f"sqlite:///{tmp_path / 'other.db'}"
    with caplog.at_level(logging.WARNING), start_run(tiny_cfg, "llm", run_id=first.info.run_id) as moved:
        mlflow.log_metric("loss", 0.25)
    assert moved.info.run_id != first.info.run_id
    assert first.info.run_id in caplog.text
    run = mlflow.MlflowClient().get_run(moved.info.run_id)
    assert run.data.metrics["loss"] == 0.25 and run.data.tags["system"] == "llm"
