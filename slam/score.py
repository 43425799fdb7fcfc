"""The score stage: WER of every system on every set, the metrics JSON and the results table."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow

from slam.config import SlamConfig
from slam.decode import RUN_FILE, read_hyps
from slam.metrics import score_wer
from slam.metrics.reports import run_reports
from slam.plots import learning_curve, wer_bars
from slam.tracking import log_dvc_lock, start_run
from slam.utils import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

# system name -> how the results table labels it
SYSTEMS = {"llm": "LLM-based (encoder + projector + LLM)", "whisper": "Whisper (own decoder)"}


def score_system(hyps_dir: Path, normalizer: str, errors_dir: Path) -> dict:
    results = {}
    for path in sorted(hyps_dir.glob("*.beam*.jsonl")):
        rows = read_hyps(path)
        scored = score_wer({r["id"]: r["ref"] for r in rows}, {r["id"]: r["hyp"] for r in rows}, normalizer)
        name = path.name.removesuffix(".jsonl")
        results[name] = scored["summary"]
        errors_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(errors_dir / f"{name}.jsonl",
                          "".join(json.dumps(r) + "\n" for r in scored["utterances"]))
    return results


def results_table(metrics: dict, train: dict | None) -> str:
    """Markdown: one row per system and beam width, one WER column per set."""
    sets = sorted({k.split(".beam")[0] for system in metrics.values() for k in system})
    lines = ["| system | decoding | " + " | ".join(f"WER {s} (%)" for s in sets) + " |",
             "|---|---|" + "---|" * len(sets)]
    for system, results in metrics.items():
        beams = sorted({k.split(".beam")[1] for k in results}, key=int)
        for beam in beams:
            cells = []
            for s in sets:
                r = results.get(f"{s}.beam{beam}")
                cells.append(f"{100 * r['wer']:.1f}" if r else "missing")
            decoding = "greedy" if beam == "1" else f"beam {beam}"
            lines.append(f"| {SYSTEMS.get(system, system)} | {decoding} | " + " | ".join(cells) + " |")
    if train:
        lines.append("")
        lines.append(f"LLM-based model: {train['steps']} steps, {train['samples']} utterances seen, "
                     f"{train['train_minutes']:.1f} min of training, "
                     f"{train['trainable_params'] / 1e6:.2f}M trainable parameters.")
    return "\n".join(lines) + "\n"


def score(cfg: SlamConfig) -> dict:
    metrics_dir = Path(cfg.score.dir) / cfg.recipe
    errors_root = Path(cfg.train.dir) / "errors"
    metrics = {}
    for system, directory in (("llm", Path(cfg.decode.dir)), ("whisper", Path(cfg.baseline.dir))):
        if not directory.exists():
            continue
        metrics[system] = score_system(directory, cfg.score.normalizer, errors_root / system)
        run_file = directory / RUN_FILE
        if run_file.exists():
            with start_run(cfg, system, run_id=json.loads(run_file.read_text())["mlflow_run_id"]):
                for name, summary in metrics[system].items():
                    mlflow.log_metric(f"wer_{name.replace('.', '_')}", summary["wer"])
                mlflow.log_artifacts(str(errors_root / system), "errors")
                mlflow.log_artifacts(str(directory), "hyps")
                log_dvc_lock()  # by now dvc.lock pins every stage this system came from
    atomic_write_json(metrics_dir / "wer.json", metrics)
    train_file = metrics_dir / "train.json"
    train = json.loads(train_file.read_text()) if train_file.exists() else None
    table = results_table(metrics, train) + run_reports(cfg, metrics_dir)  # score.reports: extra sections
    atomic_write_text(metrics_dir / "results.md", table)
    figures = [wer_bars(metrics, metrics_dir / "wer.png"),
               learning_curve(metrics_dir, metrics_dir / "learning_curve.png")]
    run_file = Path(cfg.decode.dir) / RUN_FILE
    if run_file.exists():  # the figures and table belong to the trained system's run
        with start_run(cfg, "llm", run_id=json.loads(run_file.read_text())["mlflow_run_id"]):
            for figure in filter(None, figures):
                mlflow.log_artifact(str(figure), "figures")
            mlflow.log_artifact(str(metrics_dir / "results.md"))
    print(table)
    return metrics
