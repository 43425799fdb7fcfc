"""The MLflow server, started as `make ui` starts it, serves the runs the pipeline logs.

A run is logged through slam.tracking into a SQLite store, then `mlflow server` is started
over that store and its REST API must return the run with its tags, params and metric.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest

from slam.config import SlamConfig
from slam.tracking import start_run, system_tags

STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


def wait_until_up(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited with {server.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer within {STARTUP_SECONDS} s:\n{log.read_text()[-3000:]}")


def stop(server: subprocess.Popen) -> None:
    """The server and its workers form their own process group (start_new_session): end it."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=15)


def test_server_serves_the_logged_run(tmp_path):
    db = tmp_path / "mlflow.db"
    cfg = SlamConfig()
    cfg.tracking.uri = f"sqlite:///{db}"
    with start_run(cfg, "llm") as run:
        mlflow.log_metric("wer_test_beam1", 0.25)
    run_id = run.info.run_id
    mlflow.set_tracking_uri(None)  # the rest of the test talks to the server only

    port = free_port()
    log = tmp_path / "server.log"
    # as the Makefile's `ui` target: no job execution (it would need extra services), one worker
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", cfg.tracking.uri,
           "--default-artifact-root", (tmp_path / "mlartifacts").as_uri(),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("w") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                  start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(f"{base}/health", server, log)
        experiments = call(f"{base}/api/2.0/mlflow/experiments/search", {"max_results": 10})
        ids = {e["name"]: e["experiment_id"] for e in experiments["experiments"]}
        assert cfg.tracking.experiment in ids
        found = call(f"{base}/api/2.0/mlflow/runs/search",
                     {"experiment_ids": [ids[cfg.tracking.experiment]],
                      "filter": "tags.system = 'llm' and metrics.wer_test_beam1 < 0.5"})
        assert [r["info"]["run_id"] for r in found["runs"]] == [run_id]
        data = found["runs"][0]["data"]
        tags = {t["key"]: t["value"] for t in data["tags"]}
        for key, value in system_tags(cfg, "llm").items():
            assert tags[key] == value, key
        assert {m["key"]: m["value"] for m in data["metrics"]}["wer_test_beam1"] == 0.25
        params = {p["key"]: p["value"] for p in data["params"]}
        assert params["projector.k"] == str(cfg.projector.k) and params["llm.path"] == cfg.llm.path
        artifacts = call(f"{base}/api/2.0/mlflow/artifacts/list?run_id={run_id}")
        assert "config.json" in {f["path"] for f in artifacts.get("files", [])}
    finally:
        stop(server)
    assert server.poll() is not None
