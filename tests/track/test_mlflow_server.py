"""The MLflow server, started as `make ui` starts it, serves the runs the pipeline logs and the
committed run records, and a browser shows them.

A run is logged through slam.track.tracking into a SQLite store, then `mlflow server` is started
over that store and its REST API must return the run with its tags, params and metric.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from slam.config import SlamConfig
from slam.track.tracking import start_run, system_tags

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


@contextlib.contextmanager
def served(uri: str, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """`mlflow server` over the store at ``uri``, as the Makefile's `ui` target starts it (no
    job execution, which would need extra services; one worker); yields its URL and process."""
    port = free_port()
    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    cmd = [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri", uri,
           "--default-artifact-root", (tmp_path / "mlartifacts").as_uri(),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log.open("w") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
                                  start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(f"{base}/health", server, log)
        yield base, server
    finally:
        stop(server)


def test_server_serves_the_logged_run(tmp_path):
    db = tmp_path / "mlflow.db"
    cfg = SlamConfig()
    cfg.tracking.uri = f"sqlite:///{db}"
    with start_run(cfg, "llm") as run:
        mlflow.log_metric("wer_test_beam1", 0.25)
    run_id = run.info.run_id
    mlflow.set_tracking_uri(None)  # the rest of the test talks to the server only

    with served(cfg.tracking.uri, tmp_path) as (base, server):
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
    assert server.poll() is not None


def page_text(url: str, tmp_path: Path) -> str:
    """What a person sees at ``url``: the page rendered by headless Chromium (scripts run),
    as plain text."""
    browser = shutil.which("chromium")
    assert browser, "chromium is missing: `make setup` installs it (Debian package chromium)"
    out = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu",
                          f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=30000",
                          "--window-size=1600,4000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=180)
    dom = re.sub(r"<(script|style)\b.*?</\1>", " ", out.stdout, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))


def test_the_ui_of_a_fresh_clone_shows_the_committed_grid(tmp_path):
    """`make ui` on a fresh clone: the committed run records are imported into an empty store,
    the server started over it, and MLflow's own compare view, opened in a browser, lists the
    Table I grid's runs with their encoder and LLM; a run's page shows its WER."""
    from slam.cli import main as slam_main
    from slam.track.records import find_records, load_record

    repo = Path(__file__).resolve().parents[2]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    slam_main(["import", "--root", str(repo / "metrics"), "--tracking-uri", uri])
    grid = [load_record(p) for p in find_records(repo / "metrics" / "grid") if p.parent.name == "llm"]
    assert len(grid) >= 5
    with served(uri, tmp_path) as (base, _):
        ids = [r["run_id"] for r in grid]
        query = urllib.parse.urlencode({"runs": json.dumps(ids), "experiments": json.dumps(["1"])})
        text = page_text(f"{base}/#/compare-runs?{query}", tmp_path)
        assert f"Comparing {len(ids)} Runs" in text, text[:2000]
        assert "Run ID: " + " ".join(ids) in text
        for tag in ("encoder", "llm"):  # one row per tag, one value per run, in the runs' order
            assert f" {tag} " + " ".join(r["tags"][tag] for r in grid) + " " in text, tag
        first = grid[0]
        text = page_text(f"{base}/#/experiments/1/runs/{first['run_id']}", tmp_path)
        wer = first["metrics"]["wer_test_beam1"][-1][1]
        assert f"wer_test_beam1 {wer!r}" in text or f"wer_test_beam1 {wer:.4g}" in text, text[:3000]


def test_records_import_into_a_server_once(tmp_path):
    """A server (MLFLOW_TRACKING_URI) gets the same import: its own run ids, each tagged with
    the record it came from, the artifacts uploaded through it; a second import adds nothing."""
    from slam.track.records import RECORD_ID_TAG, find_records, import_records, load_record

    repo = Path(__file__).resolve().parents[2]
    root = repo / "metrics" / "grid"
    records = [load_record(p) for p in find_records(root)]
    with served(f"sqlite:///{tmp_path / 'server.db'}", tmp_path) as (base, _):
        assert import_records(base, root).imported == len(records)
        assert import_records(base, root).present == len(records)
        for record in records:
            tagged = f"tags.`{RECORD_ID_TAG}` = '{record['run_id']}'"
            found = call(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": ["1"], "filter": tagged})
            (run,) = found["runs"]
            metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
            assert metrics["wer_test_beam1"] == record["metrics"]["wer_test_beam1"][-1][1]
            listed = call(f"{base}/api/2.0/mlflow/artifacts/list?run_id={run['info']['run_id']}")
            assert "config.json" in {f["path"] for f in listed.get("files", [])}
