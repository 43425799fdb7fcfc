"""The score stage: WER (captioning scores, BLEU) of every system on every set, the metrics
JSON and the results table."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar

import mlflow
from lhotse.cut import Cut
from mlflow.tracking import MlflowClient

from slam.config import SlamConfig
from slam.data.corpora.validate import BadInputError
from slam.data.cuts import cut_text, load_cuts
from slam.decode.hyps import RUN_FILE, decoding_name, label_order, read_hyps, wer_system
from slam.recipes import recipe_of
from slam.score.metrics import score_mer, score_translation, score_wer
from slam.score.metrics.captions import score_captions
from slam.score.metrics.reports import report_metrics, run_reports
from slam.tasks.captioning import MOST_FREQUENT, REFINE, RETRIEVAL, captions_of
from slam.tasks.style import CLASSIFIER
from slam.tasks.translation import CASCADE, MMT_GOLD, split_output, translation_of
from slam.track.plots import learning_curve, score_bars
from slam.track.records import RECORD_PATH_TAG, RECORDS_DIR, export_record
from slam.track.tracking import dvc_root, log_dvc_lock, start_run, tracking_uri
from slam.utils import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)
T = TypeVar("T")

# recipe aac: hypothesis label (after the set name) -> system
CAPTION_SYSTEMS = {REFINE: "LLM-based + CLAP-Refine", RETRIEVAL: "nearest training caption (contrastive)",
                   CLASSIFIER: "style classifier -> template caption",
                   MOST_FREQUENT: "most frequent training caption"}  # fmt: skip
# the results table's caption columns: summary key -> heading
CAPTION_COLUMNS = {"bleu_1": "BLEU-1", "bleu_4": "BLEU-4", "meteor": "METEOR", "rouge_l": "ROUGE-L",
                   "cider_d": "CIDEr-D", "spice": "SPICE", "spider": "SPIDEr", "fense": "FENSE",
                   "sim_best": "MiniLM sim."}  # fmt: skip
# recipe st: hypothesis label (after the set name) -> system; the beams are SRT's
TRANSLATION_SYSTEMS = {CASCADE: "cascade: ASR, then MMT on its own transcript",
                       MMT_GOLD: "MMT on the reference transcript (translation step alone)"}  # fmt: skip
SCORES = "scores.json"  # per system: per hypothesis file (set.decoding), its summary


def set_references(cfg: SlamConfig, of: Callable[[Cut], T]) -> Callable[[str, list[dict]], dict[str, T]]:
    """``references(set_name, rows)``: what each cut of the set should read as (``of`` the
    cut: its transcript, captions or translation), from the set's manifest and read once.

    A hypothesis file says which cuts it has, never what they should read: its own ``ref``
    fields are ignored, so a cut it lacks counts as all wrong and a file with rows missing
    can never score better than the whole one. Rows for cuts the set does not have mean the
    file came from another version of the set, and are refused."""
    sets: dict[str, dict[str, T]] = {}

    def references(set_name: str, rows: list[dict]) -> dict[str, T]:
        if set_name not in sets:
            sets[set_name] = {c.id: of(c) for c in load_cuts(cfg.corpus.dir, set_name)}
        unknown = [r["id"] for r in rows if r["id"] not in sets[set_name]]
        if unknown:
            raise BadInputError(f"{len(unknown)} hypotheses for cuts that set {set_name!r} does not have "
                                f"(first: {unknown[0]!r}): decoded from another version of the set? "
                                "decode again")  # fmt: skip
        return sets[set_name]

    return references


def score_system(hyps_dir: Path, errors_dir: Path, score_rows: Callable[[str, list[dict]], dict]) -> dict:
    """Score every hypothesis file of ``hyps_dir``; per-utterance rows into ``errors_dir``."""
    results = {}
    for path in sorted(hyps_dir.glob("*.jsonl")):
        name = path.name.removesuffix(".jsonl")
        try:
            scored = score_rows(name.split(".")[0], read_hyps(path))
        except BadInputError as exc:
            raise BadInputError(f"{path}: {exc}") from None
        results[name] = scored["summary"]
        errors_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(errors_dir / f"{name}.jsonl",
                          "".join(json.dumps(r) + "\n" for r in scored["utterances"]))
    return results


def wer_rows(cfg: SlamConfig, cer: bool = False, mixed: bool = False) -> Callable[[str, list[dict]], dict]:
    """WER (with ``cer`` the character error rate too; with ``mixed`` MER instead, with its
    Chinese CER and English WER) against the set's transcripts (a cut without a hypothesis:
    all deletions)."""
    references = set_references(cfg, cut_text)

    def score_rows(set_name: str, rows: list[dict]) -> dict:
        refs, hyps = references(set_name, rows), {r["id"]: r["hyp"] for r in rows}
        if mixed:
            return score_mer(refs, hyps, cfg.score.normalizer)
        return score_wer(refs, hyps, cfg.score.normalizer, cer=cer)

    return score_rows


def caption_rows(cfg: SlamConfig) -> Callable[[str, list[dict]], dict]:
    """Recipe aac: every reference caption of each clip comes from the corpus manifests."""
    references = set_references(cfg, captions_of)

    def score_rows(set_name: str, rows: list[dict]) -> dict:
        return score_captions(references(set_name, rows), {r["id"]: r["hyp"] for r in rows},
                              sentence_model=cfg.caption.text_model, meteor=cfg.caption.meteor)  # fmt: skip

    return score_rows


def translation_rows(cfg: SlamConfig) -> Callable[[str, list[dict]], dict]:
    """Recipe st: BLEU and chrF of the translation part of each hypothesis against the
    manifest's translations; WER of the transcript part where the system wrote one."""
    translations, transcripts_of = set_references(cfg, translation_of), set_references(cfg, cut_text)
    target = cfg.corpus.translation_language

    def score_rows(set_name: str, rows: list[dict]) -> dict:
        parts = {r["id"]: split_output(r["hyp"], target) for r in rows}
        scored = score_translation(translations(set_name, rows),
                                   {i: translation for i, (_, translation) in parts.items()})  # fmt: skip
        transcripts = {i: transcript for i, (transcript, _) in parts.items() if transcript is not None}
        # the system writes a transcript first (SRT, cascade): a row without one counts as deleted
        if transcripts:
            wer = score_wer(transcripts_of(set_name, rows), transcripts, cfg.score.normalizer)["summary"]
            scored["summary"].update(transcript_wer=wer["wer"], without_tag=len(rows) - len(transcripts))
            for row in scored["utterances"]:
                row["transcript"] = transcripts.get(row["id"])
        return scored

    return score_rows


RATE_HEADINGS = {"zh_cer": "CER (zh)", "en_wer": "WER (en)"}  # the others: their key in capitals


def results_table(metrics: dict, train: dict | None, rates: tuple[str, ...] = ("wer",)) -> str:
    """Markdown: one row per system and decoding, one column per set and error rate (WER, CER)."""
    sets = sorted({k.split(".", 1)[0] for system in metrics.values() for k in system})
    columns = [(s, rate) for s in sets for rate in rates]
    lines = ["| system | decoding | " + " | ".join(f"{RATE_HEADINGS.get(rate, rate.upper())} {s} (%)"
                                                for s, rate in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for system, results in metrics.items():
        for label in sorted({k.split(".", 1)[1] for k in results}, key=label_order):
            cells = []
            for s, rate in columns:
                r = results.get(f"{s}.{label}")
                cells.append("missing" if not r else "—" if r.get(rate) is None else f"{100 * r[rate]:.1f}")
            name, decoding = wer_system(system, label)
            lines.append(f"| {name} | {decoding} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n" + training_line(train)


def captions_table(metrics: dict, train: dict | None) -> str:
    """Markdown: one row per set, system and decoding; a column per caption metric. A metric
    that could not run here reads "n/a" with its reason below the table."""
    lines = ["| set | system | " + " | ".join(CAPTION_COLUMNS.values()) + " |",
             "|---|---|" + "---|" * len(CAPTION_COLUMNS)]
    reasons: dict[str, str] = {}
    def order(row: tuple) -> tuple:  # per set: the LLM's beams, then CAPTION_SYSTEMS' order
        set_name, label = row[0], row[1]
        if label.startswith("beam"):
            return set_name, 0, int(label.removeprefix("beam"))
        known = list(CAPTION_SYSTEMS)
        return set_name, 1, known.index(label) if label in known else len(known)

    summaries = [(*name.split(".", 1), summary) for results in metrics.values()
                 for name, summary in results.items()]  # fmt: skip
    rows = sorted(summaries, key=order)
    for set_name, label, summary in rows:
        system = CAPTION_SYSTEMS.get(label) or f"LLM-based, {decoding_name(label.removeprefix('beam'))}"
        cells = []
        for key in CAPTION_COLUMNS:
            value = summary.get(key)
            cells.append("n/a" if value is None else f"{value:.3f}")
            if value is None and key in summary.get("unavailable", {}):
                reasons[CAPTION_COLUMNS[key]] = summary["unavailable"][key]
        lines.append(f"| {set_name} | {system} | " + " | ".join(cells) + " |")
    lines += ["", *(f"- {name} n/a: {reason}" for name, reason in reasons.items())]
    return "\n".join(lines) + "\n" + training_line(train)


def translation_table(metrics: dict, train: dict | None) -> str:
    """Markdown: one row per set and system (SRT beams, cascade, MMT, Whisper); BLEU, chrF and
    the WER of the transcript a system wrote on its way to the translation."""
    lines = ["| set | system | BLEU | chrF | transcript WER (%) |", "|---|---|---|---|---|"]
    rows = []
    for system, results in metrics.items():
        for name, summary in results.items():
            set_name, label = name.split(".", 1)
            if system != "llm":
                order, text = len(TRANSLATION_SYSTEMS) + 1, "Whisper (own decoder), task translate"
            elif label in TRANSLATION_SYSTEMS:
                order, text = 1 + list(TRANSLATION_SYSTEMS).index(label), TRANSLATION_SYSTEMS[label]
            else:
                order, text = 0, f"SRT (chain of thought), {decoding_name(label.removeprefix('beam'))}"
            rows.append((set_name, order, text, summary))
    for set_name, _, system, s in sorted(rows, key=lambda r: r[:3]):
        wer = "—" if s.get("transcript_wer") is None else f"{100 * s['transcript_wer']:.1f}"
        lines.append(f"| {set_name} | {system} | {s['bleu']:.1f} | {s['chrf']:.1f} | {wer} |")
    return "\n".join(lines) + "\n" + training_line(train)


def training_line(train: dict | None) -> str:
    if not train:
        return ""
    return (f"\nLLM-based model: {train['steps']} steps, {train['samples']} utterances seen, "
            f"{train['train_minutes']:.1f} min of training, "
            f"{train['trainable_params'] / 1e6:.2f}M trainable parameters.\n")


@dataclass(frozen=True)
class Scoring:
    """What differs between the WER recipes, captioning and translation, chosen once."""

    rows: Callable[[SlamConfig], Callable[[str, list[dict]], dict]]  # a hypothesis file's scorer
    baseline: str  # the baseline stage's system name
    logged: tuple[str, ...]  # summary keys logged to MLflow per hypothesis file
    table: Callable[[dict, dict | None], str]
    bars: tuple[str, str, float]  # the bar chart's summary key, axis label and scale


WER_SCORING = Scoring(wer_rows, "whisper", ("wer",), results_table, ("wer", "WER (%)", 100))
# recipe asr_lang: the character error rate beside the WER (the paper's Table IV gives CER for Thai)
WER_CER_SCORING = Scoring(partial(wer_rows, cer=True), "whisper", ("wer", "cer"),
                          partial(results_table, rates=("wer", "cer")), ("wer", "WER (%)", 100))  # fmt: skip
# recipe asr_codeswitch: MER, and each language's part apart (the paper's Table V)
_MER_RATES = ("mer", "zh_cer", "en_wer")
MER_SCORING = Scoring(partial(wer_rows, mixed=True), "whisper", _MER_RATES,
                      partial(results_table, rates=_MER_RATES), ("mer", "MER (%)", 100))  # fmt: skip
CAPTION_SCORING = Scoring(caption_rows, "baseline", tuple(CAPTION_COLUMNS), captions_table,
                          ("cider_d", "CIDEr-D", 1))  # fmt: skip
TRANSLATION_SCORING = Scoring(translation_rows, "whisper", ("bleu", "chrf", "transcript_wer"),
                              translation_table, ("bleu", "BLEU", 1))  # fmt: skip


def write_records(cfg: SlamConfig, metrics_dir: Path, run_ids: dict[str, str]) -> None:
    """The committed record of each scored system's run (slam.track.records), beside its metrics;
    the metrics folder's own files are referenced, not copied."""
    client = MlflowClient(tracking_uri(cfg))
    references = [p for p in metrics_dir.iterdir() if p.is_file()]
    for system, run_id in run_ids.items():
        folder = metrics_dir / RECORDS_DIR / system
        client.set_tag(run_id, RECORD_PATH_TAG, os.path.relpath(folder.resolve(), dvc_root().resolve()))
        export_record(client, run_id, folder, references=references)


def score(cfg: SlamConfig) -> dict:
    metrics_dir = Path(cfg.score.dir) / cfg.recipe
    errors_root = Path(cfg.train.dir) / "errors"
    scoring = recipe_of(cfg).scoring()
    score_rows = scoring.rows(cfg)
    metrics, run_ids = {}, {}
    for system, directory in (("llm", Path(cfg.decode.dir)), (scoring.baseline, Path(cfg.baseline.dir))):
        if not directory.exists():
            continue
        metrics[system] = score_system(directory, errors_root / system, score_rows)
        run_file = directory / RUN_FILE
        if run_file.exists():
            run_ids[system] = json.loads(run_file.read_text())["mlflow_run_id"]
            with start_run(cfg, system, run_id=run_ids[system]) as run:
                # a decoding DVC restored from its run-cache ran in another checkout, whose MLflow
                # store holds its run: this one records it as a new run
                run_ids[system] = run.info.run_id
                for name, summary in metrics[system].items():
                    mlflow.log_metrics({f"{key}_{name.replace('.', '_')}": summary[key]
                                        for key in scoring.logged
                                        if summary.get(key) is not None})  # fmt: skip
                mlflow.log_artifacts(str(errors_root / system), "errors")
                mlflow.log_artifacts(str(directory), "hyps")
                log_dvc_lock()  # by now dvc.lock pins every stage this system came from
    atomic_write_json(metrics_dir / SCORES, metrics)
    train_file = metrics_dir / "train.json"
    train = json.loads(train_file.read_text()) if train_file.exists() else None
    table = scoring.table(metrics, train)
    table += run_reports(cfg, metrics_dir)  # score.reports: extra sections
    for system, values in report_metrics(cfg, metrics_dir).items():  # e.g. Table VII's B-WER
        if system in run_ids and values:
            with start_run(cfg, system, run_id=run_ids[system]):
                mlflow.log_metrics(values)
    atomic_write_text(metrics_dir / "results.md", table)
    figures = [score_bars(metrics, metrics_dir / "scores.png", *scoring.bars),
               learning_curve(metrics_dir, metrics_dir / "learning_curve.png")]
    if "llm" in run_ids:  # the figures and table belong to the trained system's run
        with start_run(cfg, "llm", run_id=run_ids["llm"]):
            for figure in filter(None, figures):
                mlflow.log_artifact(str(figure), "figures")
            mlflow.log_artifact(str(metrics_dir / "results.md"))
    write_records(cfg, metrics_dir, run_ids)
    print(table)
    return metrics
