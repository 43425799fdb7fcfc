"""Contextual biasing (paper IV-B3): rare words, per-utterance biasing lists, the prompts that
carry them, and the decoding conditions of the Table VII analogue (recipe ``asr_bias``).

Lists follow the artificial biasing lists the paper takes from Le et al.: the
``bias.common_words`` most frequent training words are common and every other word is rare;
an utterance's list of size N is its own rare words plus N minus that many distractors drawn
from the rare words of the training vocabulary (never a word of the utterance), in a seeded
order. The lists of one utterance are nested: a longer one extends a shorter one.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from lhotse import CutSet

from slam.config import BiasConfig, ConfigError, SlamConfig
from slam.data.cuts import AudioTextDataset, cut_text, load_cuts
from slam.tasks.ctc_filter import ctc_filter, ctc_transcripts, load_ctc_head
from slam.train.distributed import is_main
from slam.utils import atomic_path, atomic_write_json

log = logging.getLogger(__name__)

LISTS_DIR = "lists"  # under decode.dir: every utterance's lists and CTC transcript, per set
CONDITIONS_FILE = "conditions.json"  # under decode.dir: the conditions decoded, per set
KEYWORDS = "slam_keywords"  # cut custom field: the list a decode condition puts in the prompt

# The bias keys that shape the LLM's training (its run key, the train stage's params); the
# CTC head's keys only retrain the head, the list sizes and filter only change decoding.
TRAINING_KEYS = (
    "common_words", "prompt", "separator", "keywords_field", "train_keep", "train_distractors", "seed",
)
CTC_HEAD_KEYS = ("ctc_hidden", "ctc_steps", "ctc_lr", "ctc_max_duration")

# a word: letters or digits, with inner apostrophes ("don't"); case is folded
WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def words_of(text: str) -> list[str]:
    return WORD.findall(text.lower())


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def seeded(*parts: Any) -> random.Random:
    """A generator that depends only on ``parts`` (not on order of use, process or rank)."""
    return random.Random(":".join(map(str, parts)))  # str seeds hash with sha512: stable


class RareWords:
    """The common/rare split of a training vocabulary and the pool distractors come from."""

    def __init__(self, counts: Counter[str], common_words: int) -> None:
        ranked = sorted(counts, key=lambda w: (-counts[w], w))  # ties broken alphabetically
        self.common = frozenset(ranked[:common_words])
        self.pool = ranked[common_words:]

    @classmethod
    def from_texts(cls, texts: Iterable[str], common_words: int) -> RareWords:
        return cls(Counter(w for text in texts for w in words_of(text)), common_words)

    def of(self, text: str) -> list[str]:
        """The rare words of ``text``, once each, in order (words unseen in training are rare)."""
        return _unique(w for w in words_of(text) if w not in self.common)

    def distractors(self, text: str, count: int, rng: random.Random) -> list[str]:
        """``count`` pool words that do not occur in ``text`` (all of them if the pool is short)."""
        own = set(words_of(text))
        candidates = [w for w in self.pool if w not in own]
        return rng.sample(candidates, min(count, len(candidates)))


def manifest_keywords(cut: Any, field: str) -> list[str] | None:
    """A cut's own keyword list from a supervision (or cut) custom field; None if absent.

    A string is read as comma-separated entries; entries may be phrases.
    """
    customs = [s.custom for s in cut.supervisions] + [cut.custom]
    for custom in customs:
        if custom and custom.get(field) is not None:
            value = custom[field]
            entries = value.split(",") if isinstance(value, str) else value
            return _unique(str(e).strip() for e in entries if str(e).strip())
    return None


def format_prompt(cfg: BiasConfig, keywords: list[str]) -> str:
    if "{keywords}" not in cfg.prompt:
        raise ConfigError(f"bias.prompt must contain '{{keywords}}', got {cfg.prompt!r}")
    return cfg.prompt.format(keywords=cfg.separator.join(keywords))


class TrainingLists:
    """Each training row's instruction: a new list every epoch, so the model learns to pick
    from a list rather than copy it. Own rare words (or the manifest's keywords) are each
    kept with probability ``train_keep``, 0..``train_distractors`` distractors join them, and
    the list is shuffled. Seeded by epoch and cut id: a resumed run sees the same lists."""

    def __init__(self, rare: RareWords, cfg: BiasConfig) -> None:
        self.rare, self.cfg = rare, cfg

    def keywords(self, cut: Any, epoch: int) -> list[str]:
        rng = seeded(self.cfg.seed, "train", epoch, cut.id)
        text = cut_text(cut)
        own = manifest_keywords(cut, self.cfg.keywords_field)
        own = self.rare.of(text) if own is None else own
        kept = [w for w in own if rng.random() < self.cfg.train_keep]
        extra = self.rare.distractors(text, rng.randint(0, self.cfg.train_distractors), rng)
        items = _unique(kept + extra)
        rng.shuffle(items)
        return items

    def __call__(self, cut: Any, epoch: int, step: int = 0) -> str:
        return format_prompt(self.cfg, self.keywords(cut, epoch))


def training_lists(cuts: CutSet, cfg: BiasConfig) -> TrainingLists:
    return TrainingLists(RareWords.from_texts((cut_text(c) for c in cuts), cfg.common_words), cfg)


# -- decoding conditions -----------------------------------------------------------------------
LABELS = {"none": "no bias", "gt": "ground-truth hotwords", "keywords": "per-utterance keywords"}


@dataclass(frozen=True)
class Condition:
    """One way of prompting the test set: a column block of Table VII."""

    name: str
    kind: str  # "none" (empty list), "gt" (own rare words), "list" (size N) or "keywords"
    size: int = 0  # N, for kind "list"
    filtered: bool = False  # the CTC filter picks the prompt's entries from the list

    @property
    def label(self) -> str:
        if self.kind == "list":
            return f"{self.size} biasing words, " + ("CTC-filtered" if self.filtered else "whole list")
        return LABELS[self.kind]


def decode_conditions(cfg: BiasConfig, keywords: bool) -> list[Condition]:
    """In Table VII's order: no list, filtered lists, whole lists, the utterances' own keyword
    lists (when they have them), the upper bound."""
    conditions = [Condition("none", "none")]
    conditions += [Condition(f"n{n}_ctc", "list", n, True) for n in sorted(set(cfg.list_sizes))]
    conditions += [Condition(f"n{n}", "list", n) for n in sorted(set(cfg.unfiltered_sizes))]
    if keywords:
        conditions.append(Condition("keywords", "keywords"))
    return conditions + [Condition("gt", "gt")]


def max_list_size(cfg: BiasConfig) -> int:
    return max([*cfg.list_sizes, *cfg.unfiltered_sizes], default=0)


def utterance_record(cut: Any, rare: RareWords, cfg: BiasConfig) -> dict[str, Any]:
    """Everything a test utterance's lists are made of: its rare words and its distractors
    for the longest list (shorter lists take a prefix)."""
    text = cut_text(cut)
    own = rare.of(text)
    count = max(0, max_list_size(cfg) - len(own))
    distractors = rare.distractors(text, count, seeded(cfg.seed, "test", cut.id))
    return {"id": cut.id, "rare": own, "distractors": distractors,
            "keywords": manifest_keywords(cut, cfg.keywords_field)}


def full_list(record: dict[str, Any], size: int) -> list[str]:
    """The size-N list: own rare words first, then distractors up to N (order as drawn)."""
    own = record["rare"]
    return own + record["distractors"][: max(0, size - len(own))]


def scoring_list(condition: Condition, record: dict[str, Any]) -> list[str]:
    """The words that count as biased for B-WER and U-WER: the list the condition starts from
    (the reference's rare words when the prompt has none or only those)."""
    if condition.kind == "list":
        return full_list(record, condition.size)
    if condition.kind == "keywords":
        return record["keywords"] or []
    return record["rare"]


def prompt_list(condition: Condition, record: dict[str, Any], cfg: BiasConfig) -> list[str]:
    """The entries that reach the prompt under ``condition``."""
    if condition.kind == "none":
        return []
    if condition.kind == "keywords":
        return list(record["keywords"] or [])
    entries = record["rare"] if condition.kind == "gt" else full_list(record, condition.size)
    if condition.filtered:
        return ctc_filter(entries, record["ctc"], cfg.filter_threshold, cfg.filter_max)
    entries = list(entries)
    seeded(cfg.seed, condition.name, record["id"]).shuffle(entries)  # own words must not come first
    return entries


def prompt_entries(cut: Any) -> list[str]:
    """The list a decode condition attached to the cut."""
    return cut.custom[KEYWORDS]


def cut_instruction(cfg: BiasConfig, cut: Any, epoch: int = 0, step: int = 0) -> str:
    """A decode row's instruction: the list its condition attached to the cut."""
    return format_prompt(cfg, prompt_entries(cut))


def lists_path(decode_dir: str | Path, set_name: str) -> Path:
    return Path(decode_dir) / LISTS_DIR / f"{set_name}.jsonl.gz"


def write_lists(path: Path, records: list[dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def read_lists(decode_dir: str | Path, set_name: str) -> dict[str, dict[str, Any]]:
    with gzip.open(lists_path(decode_dir, set_name), "rt", encoding="utf-8") as f:
        return {r["id"]: r for r in map(json.loads, f) if r}


def read_conditions(decode_dir: str | Path) -> dict[str, list[Condition]]:
    raw = json.loads((Path(decode_dir) / CONDITIONS_FILE).read_text())
    return {name: [Condition(**c) for c in conds] for name, conds in raw.items()}


# (a set's cuts, the training vocabulary's rare words) -> keyword lists for cuts without their own
KeywordLists = Callable[[CutSet, RareWords], dict[str, list[str]]]


def filters_lists(cfg: BiasConfig) -> bool:
    """Whether any condition needs the CTC head (a CTC-filtered list size)."""
    return bool(cfg.list_sizes)


def prepare_decoding(
    cfg: SlamConfig,
    sets: dict[str, CutSet],
    dataset: AudioTextDataset,
    assets: Path,
    device: torch.device,
    manifests_dir: str | Path,
    keyword_lists: KeywordLists | None = None,
) -> dict[str, CutSet]:
    """Lists, CTC transcripts and prompt entries of every test cut under every condition.

    Writes them to ``<decode.dir>/lists`` and returns one CutSet per ``<set>.<condition>``
    whose cuts carry their prompt entries; ``decode_instruction`` turns them into prompts.
    ``keyword_lists`` gives the cuts without a manifest keyword list one of their own.
    """
    bias = cfg.bias
    rare = RareWords.from_texts((cut_text(c) for c in load_cuts(manifests_dir, "train")), bias.common_words)
    if len(rare.pool) < max_list_size(bias):
        log.warning("only %d rare training words: lists of %d are cut short",
                    len(rare.pool), max_list_size(bias))
    head = load_ctc_head(assets).to(device) if filters_lists(bias) else None
    out, conditions = {}, {}
    for name, cuts in sets.items():
        transcripts = ctc_transcripts(head, cuts, dataset, device, cfg.decode.batch_size) if head else {}
        built = keyword_lists(cuts, rare) if keyword_lists else {}
        records = []
        for cut in cuts:
            record = utterance_record(cut, rare, bias)
            record["ctc"] = transcripts.get(cut.id)
            if record["keywords"] is None and cut.id in built:
                record["keywords"] = built[cut.id]
            records.append(record)
        conds = decode_conditions(bias, keywords=any(r["keywords"] is not None for r in records))
        for record in records:
            record["prompts"] = {c.name: prompt_list(c, record, bias) for c in conds}
        if is_main():
            write_lists(lists_path(cfg.decode.dir, name), records)
        conditions[name] = [dataclasses.asdict(c) for c in conds]
        prompts = {r["id"]: r["prompts"] for r in records}
        for c in conds:
            out[f"{name}.{c.name}"] = CutSet.from_cuts(
                [cut.with_custom(KEYWORDS, prompts[cut.id][c.name]) for cut in cuts]
            )
        log.info("%s: %d conditions, %.1f rare words per utterance", name, len(conds),
                 sum(len(r["rare"]) for r in records) / max(len(records), 1))
    if is_main():
        atomic_write_json(Path(cfg.decode.dir) / CONDITIONS_FILE, conditions)
    return out


def decode_instruction(cfg: BiasConfig) -> Callable[[Any, int, int], str]:
    """The dataset's ``instruction`` for the cuts :func:`prepare_decoding` returns."""
    return partial(cut_instruction, cfg)
