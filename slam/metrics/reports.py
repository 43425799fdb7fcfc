"""Extra sections of the score stage's results, chosen by name in ``score.reports``.

A report reads the hypotheses the decode and baseline stages wrote, writes its numbers to
``<score.dir>/<recipe>/<name>.json`` and returns a markdown section that the score stage
appends to ``results.md``. With no reports configured the results are as before.
"""

from __future__ import annotations

import json
from pathlib import Path

from slam.config import SlamConfig
from slam.metrics.biasing import score_biasing
from slam.metrics.mer import score_mer
from slam.registry import Registry
from slam.utils import atomic_write_json

REPORTS: Registry[str] = Registry("report")

SYSTEM_LABELS = {"llm": "LLM-based", "whisper": "Whisper (own decoder)"}


def _read_hyps(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _systems(cfg: SlamConfig) -> dict[str, Path]:
    """The hypothesis dirs the score stage reads, by system (as ``slam.score`` names them)."""
    return {"llm": Path(cfg.decode.dir), "whisper": Path(cfg.baseline.dir)}


def _references(cfg: SlamConfig, set_name: str) -> dict[str, str]:
    """The set's transcripts from its manifest, never a hypothesis file's ``ref`` fields: a cut
    a file lacks then counts as all deletions (the score stage does the same)."""
    from slam.data import cut_text, load_cuts  # here: slam.data pulls in torch and transformers

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


@REPORTS.register("biasing")
def biasing_report(cfg: SlamConfig, metrics_dir: Path) -> str:
    """The Table VII analogue of recipe ``asr_bias`` (``biasing.json``): per test set and
    beam, WER / B-WER / U-WER / recall of each biasing condition, and of the baseline with
    the reference rare words as its list."""
    from slam.biasing import CONDITIONS_FILE, Condition, read_conditions, read_lists, scoring_list

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
