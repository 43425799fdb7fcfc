"""Turn the pre-record snapshots under metrics/ into run records (slam.track.records), once.

Before the score stage wrote records, each committed pipeline run was a snapshot folder:
``params.yaml``, ``dvc.lock`` and ``commit.txt`` beside the metrics folder of its recipe
(``scores.json``, curves, figures). This writes each snapshot's runs as records in the layout
the score stage now uses (``<metrics>/runs/<system>/``) and then removes the copied
``params.yaml`` and ``dvc.lock`` (the record keeps the composed config and the stage digests).

A record takes the run id of the committed table cells whose values it reproduces exactly, so
the tables' links stay valid; a run no table shows gets an id derived from its folder. The
runs' MLflow histories are gone with the machines that made them: a record holds what the
snapshot held (scores, curves, figures), not the hypotheses.

    python scripts/backfill_records.py [--keep-snapshots]
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import uuid
from collections import Counter
from pathlib import Path

import yaml

from slam.track.records import FORMAT, RECORD_FILE, RECORDS_DIR
from slam.track.tables import load_specs
from slam.track.tracking import dvc_stage_hashes, flatten
from slam.utils import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
CURVE_META = ("step", "samples", "minutes")
SCORES = ("scores.json", "wer.json")  # the score stage's output, named wer.json before captioning


def snapshots() -> list[tuple[Path, Path]]:
    """(snapshot folder, metrics folder) for every snapshot with scores."""
    found = []
    for params in sorted((ROOT / "metrics").rglob("params.yaml")):
        folder = params.parent
        if "experiments" in folder.parts:
            continue
        recipe = yaml.safe_load(params.read_text()).get("recipe", "asr")
        for metrics in (folder / recipe, folder):
            if any((metrics / name).is_file() for name in SCORES):
                found.append((folder, metrics))
                break
    return found


def commit_of(folder: Path) -> str:
    text = (folder / "commit.txt").read_text().split() if (folder / "commit.txt").is_file() else []
    if not text:
        return ""
    out = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{text[0]}^{{commit}}"],
                         capture_output=True, text=True, cwd=ROOT)
    return out.stdout.strip() or text[0]


def commit_time_ms(commit: str) -> int | None:
    out = subprocess.run(["git", "log", "-1", "--format=%ct", commit], capture_output=True, text=True,
                         cwd=ROOT)
    return int(out.stdout.strip()) * 1000 if out.returncode == 0 and out.stdout.strip() else None


def scored_metrics(summaries: dict) -> dict[str, float]:
    """As the score stage logs them: ``<key>_<set>_<decoding>`` for every numeric summary key."""
    return {f"{key}_{name.replace('.', '_')}": float(value)
            for name, summary in summaries.items() for key, value in summary.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def curve(path: Path, prefix: str) -> dict[str, list[list[float]]]:
    if not path.is_file():
        return {}
    history: dict[str, list[list[float]]] = {}
    for row in csv.DictReader(path.open()):
        for key, value in row.items():
            if key in CURVE_META or value in ("", None):
                continue
            history.setdefault(f"{prefix}{key}", []).append([int(float(row["step"])), float(value), 0])
    return history


def table_cells() -> list[dict]:
    """Every filled committed cell with the raw metric value it shows."""
    scales = {spec.name: spec.scale for spec in load_specs(ROOT / "params" / "tables.yaml")}
    cells = []
    for path in sorted((ROOT / "tables").glob("*.csv")):
        for row in csv.DictReader(path.open()):
            if row["run_id"] and row["value"]:
                cells.append({**row, "raw": float(row["value"]) / scales.get(row["table"], 1.0)})
    return cells


def run_id_for(metrics: dict[str, float], cells: list[dict], fallback: str) -> str:
    # the run whose cells it reproduces most (a shared baseline, e.g. retrieval, matches cells of
    # other runs too)
    votes = Counter(c["run_id"] for c in cells if c["metric"] in metrics
                    and math.isclose(metrics[c["metric"]], c["raw"], rel_tol=1e-12, abs_tol=1e-15))
    ranked = votes.most_common(2)
    if len(ranked) == 2 and ranked[0][1] == ranked[1][1]:
        raise SystemExit(f"{fallback}: its scores match as many cells of {ranked[0][0]} as of {ranked[1][0]}")
    return ranked[0][0] if ranked else uuid.uuid5(uuid.NAMESPACE_URL, f"slam-record:{fallback}").hex


def backfill(folder: Path, metrics_dir: Path, cells: list[dict], seen: dict[str, str],
             keep: bool) -> list[str]:
    params = yaml.safe_load((folder / "params.yaml").read_text())
    commit = commit_of(folder)
    lock = yaml.safe_load((folder / "dvc.lock").read_text()) if (folder / "dvc.lock").is_file() else {}
    scores = json.loads(next(metrics_dir / n for n in SCORES if (metrics_dir / n).is_file()).read_text())
    written = []
    for system, summaries in scores.items():
        out = metrics_dir / RECORDS_DIR / system
        metrics = {k: [[0, v, 0]] for k, v in scored_metrics(summaries).items()}
        run_id = run_id_for({k: h[0][1] for k, h in metrics.items()}, cells, str(out.relative_to(ROOT)))
        if run_id in seen:  # a baseline DVC's run-cache shared between runs: one run, one record
            written.append(f"{out.relative_to(ROOT)} {run_id} (the run of {seen[run_id]})")
            continue
        seen[run_id] = str(out.relative_to(ROOT))
        artifacts = {"config.json": "artifacts/config.json", "dvc_stages.json": "artifacts/dvc_stages.json"}
        if system == "llm":  # the trained system's run carries the curves and the figures
            metrics.update(curve(metrics_dir / "train_curve.csv", "train_"))
            metrics.update(curve(metrics_dir / "dev_curve.csv", ""))
            for name, artifact in (("results.md", "results.md"), ("scores.png", "figures/scores.png"),
                                   ("wer.png", "figures/wer.png"),
                                   ("learning_curve.png", "figures/learning_curve.png"),
                                   ("train.json", "metrics/train.json"),
                                   ("train_curve.csv", "metrics/train_curve.csv"),
                                   ("dev_curve.csv", "metrics/dev_curve.csv")):
                if (metrics_dir / name).is_file():
                    artifacts[artifact] = os.path.relpath(metrics_dir / name, out)
        time = commit_time_ms(commit) if commit else None
        record = {
            "format": FORMAT, "run_id": run_id, "run_name": f"{params.get('recipe', 'asr')}-{system}",
            "experiment": params.get("tracking", {}).get("experiment", "slam"), "status": "FINISHED",
            "start_time": time, "end_time": time,
            "tags": {"recipe": params.get("recipe", "asr"), "system": system,
                     "encoder": Path(params["encoder"]["path"]).name,
                     "projector": params["projector"]["name"], "llm": Path(params["llm"]["path"]).name,
                     "peft": params["peft"]["method"], "profile": str(params.get("profile", "default")),
                     "git_commit": commit, "slam.record": str(out.relative_to(ROOT)),
                     "slam.backfilled": "from the snapshot's params.yaml, dvc.lock and scores"},
            "params": {k: str(v)[:500] for k, v in flatten(params).items()},
            "metrics": dict(sorted(metrics.items())),
            "artifacts": artifacts,
        }
        atomic_write_json(out / "artifacts" / "config.json", params)
        atomic_write_json(out / "artifacts" / "dvc_stages.json", dvc_stage_hashes(lock or {}))
        atomic_write_json(out / RECORD_FILE, record)
        written.append(f"{out.relative_to(ROOT)} {run_id}")
    if not keep:
        for name in ("params.yaml", "dvc.lock"):
            (folder / name).unlink(missing_ok=True)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep-snapshots", action="store_true", help="leave params.yaml and dvc.lock")
    args = parser.parse_args()
    cells, seen = table_cells(), {}
    for folder, metrics_dir in snapshots():
        for line in backfill(folder, metrics_dir, cells, seen, args.keep_snapshots):
            print(line)


if __name__ == "__main__":
    main()
