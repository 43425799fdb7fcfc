"""Extra sections of the score stage's results, chosen by name in ``score.reports``.

A report reads the hypotheses the decode and baseline stages wrote, writes its numbers to
``<score.dir>/<recipe>/<name>.json`` and returns a markdown section that the score stage
appends to ``results.md``. With no reports configured the results are as before.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slam.config import SlamConfig
from slam.decode.hyps import label_order, wer_system
from slam.registry import Registry
from slam.score.metrics.biasing import score_biasing
from slam.score.metrics.mer import score_mer
from slam.score.metrics.wer import score_wer
from slam.utils import atomic_write_json

log = logging.getLogger(__name__)
REPORTS: Registry[str] = Registry("report")

SYSTEM_LABELS = {"llm": "LLM-based", "whisper": "Whisper (own decoder)"}


def _read_hyps(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _systems(cfg: SlamConfig) -> dict[str, Path]:
    """The hypothesis dirs the score stage reads, by system (as ``slam.score.stage`` names them)."""
    return {"llm": Path(cfg.decode.dir), "whisper": Path(cfg.baseline.dir)}


def _references(cfg: SlamConfig, set_name: str) -> dict[str, str]:
    """The set's transcripts from its manifest, never a hypothesis file's ``ref`` fields: a cut
    a file lacks then counts as all deletions (the score stage does the same)."""
    from slam.data.cuts import cut_text, load_cuts  # here: slam.data.cuts pulls in torch and transformers

    return {c.id: cut_text(c) for c in load_cuts(cfg.corpus.dir, set_name)}


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def run_reports(cfg: SlamConfig, metrics_dir: Path) -> str:
    """Every report in ``score.reports``, as markdown to append to the results table."""
    return "".join(REPORTS.build(name, cfg, metrics_dir) for name in cfg.score.reports)


@REPORTS.register("mer")
def mer_report(cfg: SlamConfig, metrics_dir: Path) -> str:
    """MER of every system on every hypothesis file (``mer.json``)."""
    results: dict[str, dict] = {}
    for system, directory in _systems(cfg).items():
        for path in sorted(directory.glob("*.beam*.jsonl")) if directory.exists() else []:
            rows = _read_hyps(path)
            scored = score_mer(_references(cfg, path.name.split(".")[0]), {r["id"]: r["hyp"] for r in rows},
                               cfg.score.normalizer)  # fmt: skip
            results.setdefault(system, {})[path.name.removesuffix(".jsonl")] = scored["summary"]
    atomic_write_json(metrics_dir / "mer.json", results)
    lines = ["", "## Mixed error rate (CJK characters as units, other words as words)", "",
             "| system | hypotheses | MER (%) | units | CJK units |", "|---|---|---|---|---|"]
    for system, files in results.items():
        for name, s in files.items():
            lines.append(f"| {SYSTEM_LABELS.get(system, system)} | {name} | {_pct(s['mer'])} | "
                         f"{s['ref_units']} | {s['cjk_units']} |")
    return "\n".join(lines) + "\n"


@REPORTS.register("style")
def style_report(cfg: SlamConfig, metrics_dir: Path) -> str:
    """Recipe style_caption: each system's captions read back into style attributes
    (slam.data.corpora.styles.said_style) and scored per attribute against the clip's style
    (``style.json``); "all" is the share of clips with every attribute right."""
    from slam.data.corpora.styles import ATTRIBUTES, said_style, style_of  # lazy: pulls in the corpora
    from slam.data.cuts import load_cuts

    results: dict[str, dict[str, dict[str, float]]] = {}
    truth: dict[str, dict] = {}
    for system, directory in {"llm": Path(cfg.decode.dir), "baseline": Path(cfg.baseline.dir)}.items():
        for path in sorted(directory.glob("*.jsonl")) if directory.exists() else []:
            set_name = path.name.split(".")[0]
            if set_name not in truth:
                truth[set_name] = {c.id: style_of(c) for c in load_cuts(cfg.corpus.dir, set_name)}
            said = {r["id"]: said_style(r["hyp"]) for r in _read_hyps(path)}
            right = {name: [said.get(i, {}).get(name) == getattr(s, name) for i, s in truth[set_name].items()]
                     for name in ATTRIBUTES}  # fmt: skip
            scores = {name: sum(hits) / max(len(hits), 1) for name, hits in right.items()}
            scores["all"] = sum(all(hits) for hits in zip(*right.values())) / max(len(truth[set_name]), 1)
            results.setdefault(system, {})[path.name.removesuffix(".jsonl")] = scores
    atomic_write_json(metrics_dir / "style.json", results)
    names = [*ATTRIBUTES, "all"]
    lines = ["", "## Style attributes stated right (%)", "",
             "| system | hypotheses | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for system, files in results.items():
        for name, scores in files.items():
            lines.append(f"| {system} | {name} | " + " | ".join(_pct(scores[n]) for n in names) + " |")
    return "\n".join(lines) + "\n"


@REPORTS.register("biasing")
def biasing_report(cfg: SlamConfig, metrics_dir: Path) -> str:
    """The Table VII analogue of recipe ``asr_bias`` (``biasing.json``): per test set and
    beam, WER / B-WER / U-WER / recall of each biasing condition, and of the baseline with
    the reference rare words as its list."""
    from slam.tasks.biasing import CONDITIONS_FILE, Condition, read_conditions, read_lists, scoring_list

    decode_dir, baseline_dir = Path(cfg.decode.dir), Path(cfg.baseline.dir)
    if not (decode_dir / CONDITIONS_FILE).exists():
        raise FileNotFoundError(f"{decode_dir / CONDITIONS_FILE} missing: decode with recipe=asr_bias first")
    results: dict[str, dict] = {}
    lines = ["", f"## Contextual biasing (Table VII analogue; rare = outside the {cfg.bias.common_words} "
             "most frequent training words)", "",
             "B-WER: errors on reference words in the biasing list (and inserted list words), U-WER: "
             "on the others; recall: reference list words recognised; `in prompt`: list entries given "
             "to the LLM per utterance, and the share of the reference's rare words among them."]
    for set_name, conditions in read_conditions(decode_dir).items():
        records = read_lists(decode_dir, set_name)
        refs = _references(cfg, set_name)
        for beams in cfg.decode.num_beams:
            table: dict[str, dict] = {}
            baseline = baseline_dir / f"{set_name}.beam{beams}.jsonl"
            runs = [("whisper", None, baseline)] + [
                (c.name, c, decode_dir / f"{set_name}.{c.name}.beam{beams}.jsonl") for c in conditions
            ]
            for name, condition, path in runs:
                if not path.exists():
                    continue
                hyps = {r["id"]: r["hyp"] for r in _read_hyps(path)}
                ids = [i for i in refs if i in records]  # the cuts that had lists made
                # the baseline is scored like "no bias": the reference's rare words are its list
                lists = {i: scoring_list(condition or Condition("none", "none"), records[i]) for i in ids}
                scored = score_biasing(refs, hyps, lists, cfg.score.normalizer)["summary"]
                prompts = [records[i]["prompts"][name] if condition else [] for i in ids]
                rare = sum(len(records[i]["rare"]) for i in ids)
                kept = sum(len(set(p) & set(records[i]["rare"])) for p, i in zip(prompts, ids))
                scored["prompt_entries"] = sum(map(len, prompts)) / max(len(ids), 1)
                scored["prompt_rare_recall"] = kept / max(rare, 1)
                scored["label"] = condition.label if condition else "no list (baseline)"
                table[name] = scored
            key = f"{set_name}.beam{beams}"
            results[key] = table
            decoding = "greedy" if beams == 1 else f"beam {beams}"
            lines += ["", f"### {set_name}, {decoding}", "",
                      "| system | prompt | WER (%) | B-WER (%) | U-WER (%) | recall (%) | in prompt | "
                      "rare words in prompt (%) |", "|---|---|---|---|---|---|---|---|"]
            for name, s in table.items():
                system = SYSTEM_LABELS["whisper" if name == "whisper" else "llm"]
                lines.append(f"| {system} | {s['label']} | {_pct(s['wer'])} | {_pct(s['b_wer'])} | "
                             f"{_pct(s['u_wer'])} | {_pct(s['recall'])} | {s['prompt_entries']:.1f} | "
                             f"{_pct(s['prompt_rare_recall'])} |")
    atomic_write_json(metrics_dir / "biasing.json", results)
    return "\n".join(lines) + "\n"


BIASING_LOGGED = ("b_wer", "u_wer", "recall")


def biasing_metrics(results: dict[str, dict]) -> dict[str, dict[str, float]]:
    """B-WER, U-WER and recall of each condition in ``biasing.json``, by system, named as the
    score stage names its metrics (``b_wer_test_n100_ctc_beam1``; the baseline's row as
    ``b_wer_test_beam1``), so that Table VII's cells come from tracked runs."""
    by_system: dict[str, dict[str, float]] = {}
    for key, table in results.items():
        set_name, beams = key.rsplit(".", 1)
        for name, row in table.items():
            if name == "whisper":
                system, label = "whisper", f"{set_name}_{beams}"
            else:
                system, label = "llm", f"{set_name}_{name}_{beams}"
            logged = {f"{m}_{label}": row[m] for m in BIASING_LOGGED if row.get(m) is not None}
            by_system.setdefault(system, {}).update(logged)
    return by_system


# Reports whose numbers also go into the systems' runs: name -> (its <name>.json -> by system)
REPORT_METRICS: dict[str, Callable[[dict], dict[str, dict[str, float]]]] = {"biasing": biasing_metrics}


def report_metrics(cfg: SlamConfig, metrics_dir: Path) -> dict[str, dict[str, float]]:
    """The metrics of the configured reports (after :func:`run_reports` wrote them), by system."""
    out: dict[str, dict[str, float]] = {}
    for name in cfg.score.reports:
        if name in REPORT_METRICS:
            results = json.loads((metrics_dir / f"{name}.json").read_text())
            for system, values in REPORT_METRICS[name](results).items():
                out.setdefault(system, {}).update(values)
    return out


# -- breakdown: WER by synthesis engine, voice and utterance length ------------------------------
MIN_VOICE_UTTERANCES = 20  # a voice with fewer cuts in a set is pooled: its own WER would be noise
OTHER_VOICES = "other voices"
REAL = "real"  # the engine of a recorded cut (no TTS engine in its supervision)
HEARD, HELD_OUT, RECORDED = "voices heard in training", "voices held out of training", "recorded speakers"
# (label, lower bound in seconds): a cut falls in the last bucket whose bound it reaches
DURATION_BUCKETS = (("<2 s", 0.0), ("2-4 s", 2.0), ("4-6 s", 4.0), ("6-10 s", 6.0), (">=10 s", 10.0))


def engine_of(cut: Any) -> str:
    """The synthesis engine that spoke ``cut``: ``custom["engine"]``, else the ``engine:`` part of
    its speaker (as ``slam.data.corpora.tts`` names them), else "real"."""
    sup = cut.supervisions[0] if cut.supervisions else None
    if sup is None:
        return REAL
    engine = (sup.custom or {}).get("engine")
    if engine:
        return str(engine)
    speaker = sup.speaker or ""
    # a real set's speaker is a plain name: only "engine:voice" names an engine
    return speaker.split(":", 1)[0] if ":" in speaker else REAL


def voice_of(cut: Any) -> str:
    """``engine:voice`` of a synthetic cut (a voice name alone may recur across engines), else
    its speaker, else "unknown"."""
    sup = cut.supervisions[0] if cut.supervisions else None
    if sup is None:
        return "unknown"
    voice = (sup.custom or {}).get("voice")
    if voice:
        return f"{engine_of(cut)}:{voice}"
    return sup.speaker or "unknown"


def heard_of(cut: Any) -> str:
    """Whether training heard the voice of ``cut``: held-out voices (``corpus.held_out_voices``)
    and recorded speech are speakers the model never heard."""
    sup = cut.supervisions[0]
    if (sup.custom or {}).get("held_out"):
        return HELD_OUT
    return RECORDED if engine_of(cut) == REAL else HEARD


def duration_bucket(seconds: float) -> str:
    return [label for label, low in DURATION_BUCKETS if seconds >= low][-1]


def _columns(cfg: SlamConfig) -> dict[str, tuple[str, Path]]:
    """Every hypothesis file of both systems: ``<system>.<set>.<label>`` -> (column heading,
    file), in the results table's order (the LLM's beams, the CTC head, then Whisper's beams and
    its fine-tuned decoder)."""

    found = []
    for rank, (system, directory) in enumerate(_systems(cfg).items()):
        for path in sorted(directory.glob("*.jsonl")) if directory.exists() else []:
            set_name, _, label = path.name.removesuffix(".jsonl").partition(".")
            condition, _, reading = label.rpartition(".")  # asr_bias: "<condition>.beam<N>"
            name, decoding = wer_system(system, reading)  # named as in the results table
            heading = ", ".join(filter(None, (name, condition, decoding)))
            order = (set_name, rank, condition, label_order(reading))
            found.append((order, f"{system}.{set_name}.{label}", heading, path))
    return {key: (heading, path) for _, key, heading, path in sorted(found, key=lambda f: f[0])}


def _breakdown(refs: dict[str, str], hyps: dict[str, dict[str, str]], group_of: dict[str, str],
               names: list[str], normalizer: str) -> dict[str, dict]:
    """Per group name: its cut count and each column's WER summary over its cuts (None: no cuts)."""
    table = {}
    for name in names:
        group_refs = {i: refs[i] for i, g in group_of.items() if g == name}
        table[name] = {"cuts": len(group_refs), "systems": {
            key: score_wer(group_refs, h, normalizer)["summary"] if group_refs else None
            for key, h in hyps.items()}}  # fmt: skip
    return table


def _group_table(title: str, column: str, groups: dict[str, dict], headings: dict[str, str]) -> list[str]:
    lines = ["", f"#### {title}", "", f"| {column} | utts | " + " | ".join(headings.values()) + " |",
             "|---|---|" + "---|" * len(headings)]  # fmt: skip
    for group, g in groups.items():
        cells = ["—" if g["systems"].get(key) is None else _pct(g["systems"][key]["wer"]) for key in headings]
        lines.append(f"| {group} | {g['cuts']} | " + " | ".join(cells) + " |")
    return lines


@REPORTS.register("breakdown")
def breakdown_report(cfg: SlamConfig, metrics_dir: Path, min_utterances: int = MIN_VOICE_UTTERANCES) -> str:
    """Where the errors come from (``breakdown.json``): per test set, the corpus-level WER of
    every system and decoding over the cuts of each synthesis engine, each voice with at least
    ``min_utterances`` cuts (the rest pooled) and each duration bucket. ASR recipes only."""
    from slam.data.cuts import cut_text, load_cuts  # here: slam.data.cuts pulls in torch and transformers
    from slam.recipes import recipe_of

    if not recipe_of(cfg).answers_are_transcripts:  # captions and translations have no WER to break down
        log.info("report breakdown: recipe %s is not scored by WER, skipped", cfg.recipe)
        return ""
    columns = _columns(cfg)
    results: dict[str, dict] = {}
    lines = ["", "## Breakdown: WER (%) by synthesis engine, voice and utterance length", "",
             "Corpus-level WER over each group's cuts, normalised as above; `utts`: cuts in the group, "
             "a cut without a hypothesis counting as all deletions. Voices with fewer than "
             f"{min_utterances} cuts in the set are pooled as \"{OTHER_VOICES}\"; recorded speech "
             f"is engine \"{REAL}\"."]  # fmt: skip
    for set_name in sorted({key.split(".")[1] for key in columns}):
        cuts = list(load_cuts(cfg.corpus.dir, set_name))
        mine = {key: column for key, column in columns.items() if key.split(".")[1] == set_name}
        hyps = {key: {r["id"]: r["hyp"] for r in _read_hyps(path)} for key, (_, path) in mine.items()}
        refs = {c.id: cut_text(c) for c in cuts}
        voice_cuts = Counter(voice_of(c) for c in cuts)
        groups = {
            "engine": {c.id: engine_of(c) for c in cuts},
            "voice": {c.id: voice_of(c) if voice_cuts[voice_of(c)] >= min_utterances else OTHER_VOICES
                      for c in cuts},
            "heard": {c.id: heard_of(c) for c in cuts},
            "duration": {c.id: duration_bucket(c.duration) for c in cuts},
        }  # fmt: skip
        names = {
            "engine": sorted(set(groups["engine"].values())),
            "voice": sorted(set(groups["voice"].values()), key=lambda v: (v == OTHER_VOICES, v)),
            "heard": [g for g in (HEARD, HELD_OUT, RECORDED) if g in set(groups["heard"].values())],
            "duration": [label for label, _ in DURATION_BUCKETS],  # all, in order: an empty one says so
        }
        headings = {key: heading for key, (heading, _) in mine.items()}
        # a list: the JSON's keys are sorted, the columns keep the results table's order
        result = results[set_name] = {"columns": [{"key": k, "heading": h} for k, h in headings.items()]}
        for kind, group_of in groups.items():
            result[kind] = _breakdown(refs, hyps, group_of, names[kind], cfg.score.normalizer)
        lines += ["", f"### {set_name}"]
        lines += _group_table("By synthesis engine", "engine", result["engine"], headings)
        lines += _group_table(f"By voice (at least {min_utterances} cuts)", "voice", result["voice"],
                              headings)  # fmt: skip
        lines += _group_table("Speakers training heard, and speakers it never heard", "speakers",
                              result["heard"], headings)  # fmt: skip
        lines += _group_table("By utterance length", "duration", result["duration"], headings)
    atomic_write_json(metrics_dir / "breakdown.json", results)
    return "\n".join(lines) + "\n"
