"""Whisper + fine-tuning: Whisper's own decoder trained on the LLM-based system's training data.

The results table compares the LLM-based system with Whisper's own decoder as shipped
(:func:`slam.decode.stage.decode_whisper`) and with that decoder fine-tuned here, for
``baseline.finetune_minutes`` of training, on the cached encoder outputs the LLM-based system
trains on (the cache stage): both systems hear the same frames of the same frozen encoder.
Every decoder weight trains (AdamW at ``baseline.finetune_lr``), teacher-forced on Whisper's
own tokens of each transcript after Whisper's usual prefix. Every ``finetune_eval_every`` steps
and at the end, the first ``finetune_dev_cuts`` dev cuts are decoded greedily and the decoder
weights with the lowest dev WER are kept. Each set of ``baseline.sets`` is then decoded
greedily from its cached outputs into ``<baseline.dir>/<set>.finetuned.jsonl``.

Training is not resumable: an interrupted run starts again (the budget is minutes, not hours).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import torch
import torch.nn.functional as F
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler
from tqdm import tqdm
from transformers import AutoTokenizer, PreTrainedTokenizerBase, WhisperForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from slam.config import ConfigError, SlamConfig
from slam.data.cache import INFO, checked_dev_set, load_cached_cuts
from slam.data.cuts import AudioTextDataset, batches_of, cut_text
from slam.decode.hyps import FINETUNED, RUN_FILE, write_hyps
from slam.model.speech_llm import IGNORE_INDEX
from slam.recipes import recipe_of
from slam.score.metrics import error_rate
from slam.track.tracking import start_run
from slam.utils import atomic_write_json, autocast, seed_everything, setup_runtime

log = logging.getLogger(__name__)

SUMMARY = "finetune.json"  # beside the hypotheses: steps, minutes, the dev WER curve, the kept step
SEED = 0
NUM_BUCKETS = 10  # as train.num_buckets' default
MAX_GRAD_NORM = 1.0
LOG_EVERY = 10  # steps per training-loss row


@dataclass(frozen=True)
class Prompting:
    """How Whisper is asked to transcribe: the decoder's prefix tokens for teacher forcing and
    the matching ``generate`` arguments."""

    prefix: list[int]  # <|startoftranscript|> [<|xx|> <|transcribe|>] <|notimestamps|>
    eos: int  # <|endoftext|>
    generate: dict[str, str]  # language and task for a multilingual model, as decode_whisper passes them


def prompting(model: WhisperForConditionalGeneration, tokenizer: PreTrainedTokenizerBase,
              cfg: SlamConfig) -> Prompting:  # fmt: skip
    """English-only models take no language or task token; multilingual ones are told
    ``corpus.language`` and "transcribe" (as :func:`slam.decode.stage.decode_whisper` does)."""
    multilingual = bool(getattr(model.generation_config, "is_multilingual", False))
    tokens = ["<|startoftranscript|>"]
    if multilingual:
        tokens += [f"<|{cfg.corpus.language}|>", "<|transcribe|>"]
    tokens.append("<|notimestamps|>")
    ids = tokenizer.convert_tokens_to_ids(tokens)
    missing = [t for t, i in zip(tokens, ids) if i is None or i == tokenizer.unk_token_id]
    if missing:
        raise ConfigError(f"encoder.path {cfg.encoder.path}: Whisper's tokenizer has no {missing} "
                          f"(corpus.language {cfg.corpus.language!r})")  # fmt: skip
    generate = {"language": cfg.corpus.language, "task": "transcribe"} if multilingual else {}
    return Prompting(prefix=ids, eos=tokenizer.convert_tokens_to_ids("<|endoftext|>"), generate=generate)


def teacher_forcing(
    targets: list[list[int]], prompt: Prompting, max_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Decoder inputs (the prefix, then the transcript's tokens) and labels (the transcript's
    tokens, then <|endoftext|>, each predicted from the position before it; the prefix is
    given, not learned), right-padded. A transcript is cut to fit ``max_len`` positions."""
    n = len(prompt.prefix)
    rows = [t[: max_len - n] for t in targets]
    width = n + max(map(len, rows))
    inputs = torch.full((len(rows), width), prompt.eos, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, tokens in enumerate(rows):
        inputs[i, : n + len(tokens)] = torch.tensor(prompt.prefix + tokens)
        labels[i, n - 1 : n + len(tokens)] = torch.tensor(tokens + [prompt.eos])
    return inputs, labels


def encoder_outputs(batch: dict[str, Any], device: torch.device) -> BaseModelOutput:
    # The items of a batch have similar lengths (sorted or bucketed by duration) and the shorter
    # ones are padded with zeros: Whisper's cross-attention takes no mask, so they see the zeros.
    return BaseModelOutput(last_hidden_state=batch["inputs"].to(device))


def teacher_forced_loss(model: WhisperForConditionalGeneration, batch: dict[str, Any], prompt: Prompting,
                        device: torch.device) -> torch.Tensor:  # fmt: skip
    """Mean cross-entropy per label token of one dataset batch."""
    inputs, labels = teacher_forcing(batch["targets"], prompt, model.config.max_target_positions)
    logits = model(encoder_outputs=encoder_outputs(batch, device), decoder_input_ids=inputs.to(device)).logits
    return F.cross_entropy(logits.float().flatten(0, 1), labels.to(device).flatten(),
                           ignore_index=IGNORE_INDEX)  # fmt: skip


def whisper_dataset(tokenizer: PreTrainedTokenizerBase) -> AudioTextDataset:
    """Batches of cached encoder outputs with Whisper's tokens of the transcripts. Whisper writes
    a space before the first word (its tokens are " The", not "The"): the targets do too."""
    return AudioTextDataset(tokenizer, target=lambda cut, epoch, step: " " + cut_text(cut))


@torch.no_grad()
def transcribe_cached(
    model: WhisperForConditionalGeneration, tokenizer: PreTrainedTokenizerBase, cuts: CutSet,
    prompt: Prompting, cfg: SlamConfig, device: torch.device,
) -> dict[str, str]:  # fmt: skip
    """Greedy transcripts of cached cuts, by cut id: transformers' Whisper ``generate`` takes
    ``encoder_outputs`` for short-form audio (under 30 s of frames) and skips the encoder."""
    dataset = whisper_dataset(tokenizer)
    was_training = model.training
    model.eval()
    hyps = {}
    for batch_cuts in batches_of(cuts, cfg.baseline.batch_size):
        batch = dataset[batch_cuts]
        with autocast(cfg.runtime, device):
            # one window, one call: cached outputs are short-form, and without it a timestamp
            # token in the output sends transformers seeking on through input features there
            # are none of (it fails cutting them out of the batch)
            ids = model.generate(encoder_outputs=encoder_outputs(batch, device), num_beams=1,
                                 max_new_tokens=cfg.baseline.max_new_tokens, force_unique_generate_call=True,
                                 **prompt.generate)  # fmt: skip
        texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
        hyps.update(zip(batch["ids"], (t.strip() for t in texts)))
    model.train(was_training)
    return hyps


def dev_wer(model: WhisperForConditionalGeneration, tokenizer: PreTrainedTokenizerBase, cuts: CutSet,
            prompt: Prompting, cfg: SlamConfig, device: torch.device) -> float:  # fmt: skip
    """Greedy WER (the recipe's error rate) on ``cuts``, normalised as the score stage does."""
    hyps = transcribe_cached(model, tokenizer, cuts, prompt, cfg, device)
    refs = {c.id: cut_text(c) for c in cuts}
    return error_rate(recipe_of(cfg).error_rate, refs, hyps, cfg.score.normalizer)


def decoder_parameters(model: WhisperForConditionalGeneration) -> dict[str, torch.nn.Parameter]:
    """Every weight but the encoder's (the output projection is tied to the decoder's embeddings)."""
    return {n: p for n, p in model.named_parameters() if not n.startswith("model.encoder.")}


def _batches(cuts: CutSet, dataset: AudioTextDataset, max_duration: float) -> Iterator[dict[str, Any]]:
    """Endless shuffled epochs of dynamic-bucketing batches."""
    sampler = DynamicBucketingSampler(cuts, max_duration=max_duration, num_buckets=NUM_BUCKETS, shuffle=True,
                                      seed=SEED, drop_last=False)  # fmt: skip
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        for batch_cuts in sampler:
            yield dataset[batch_cuts]
        epoch += 1


def train_decoder(
    model: WhisperForConditionalGeneration,
    tokenizer: PreTrainedTokenizerBase,
    prompt: Prompting,
    train_cuts: CutSet,
    dev_cuts: CutSet | None,
    cfg: SlamConfig,
    device: torch.device,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Train the decoder for ``baseline.finetune_minutes`` of steps (dev evaluations not counted)
    or ``max_steps``, whichever ends first; with ``dev_cuts``, keep the weights of the evaluated
    step with the lowest dev WER. Returns the summary (steps, minutes, curves, kept step)."""
    bc = cfg.baseline
    weights = decoder_parameters(model)
    for name, param in model.named_parameters():
        param.requires_grad_(name in weights)
    optimizer = torch.optim.AdamW(weights.values(), lr=bc.finetune_lr)
    batches = _batches(train_cuts, whisper_dataset(tokenizer), bc.finetune_max_duration)
    budget = bc.finetune_minutes * 60
    step, trained, window = 0, 0.0, []
    curve: list[dict] = []
    dev_curve: list[dict] = []
    best: dict[str, Any] = {"dev_wer": math.inf}

    def evaluate() -> None:
        wer = dev_wer(model, tokenizer, dev_cuts, prompt, cfg, device)
        dev_curve.append({"step": step, "minutes": round(trained / 60, 3), "dev_wer": wer})
        log.info("step %d: dev WER %.3f on %d cuts", step, wer, len(dev_cuts))
        if wer < best["dev_wer"]:  # a copy off the device: the weights go on changing
            best.update(dev_wer=wer, step=step,
                        weights={n: p.detach().to("cpu", copy=True) for n, p in weights.items()})

    model.train()
    bar = tqdm(total=max_steps if max_steps else round(budget, 1), unit="step" if max_steps else "s",
               desc="fine-tuning Whisper's decoder")  # fmt: skip
    while (max_steps is None or step < max_steps) and trained < budget:
        start = time.monotonic()
        batch = next(batches)
        with autocast(cfg.runtime, device):
            loss = teacher_forced_loss(model, batch, prompt, device)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(weights.values(), MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        seconds = time.monotonic() - start
        trained += seconds
        window.append(loss.item())
        bar.update(1 if max_steps else min(seconds, max(budget - bar.n, 0)))
        bar.set_postfix(step=step, loss=f"{loss.item():.3f}")
        if step % LOG_EVERY == 0:
            curve.append({"step": step, "minutes": round(trained / 60, 3), "loss": sum(window) / len(window)})
            window = []
        if dev_cuts is not None and step % bc.finetune_eval_every == 0:
            evaluate()
    bar.close()
    if window:
        curve.append({"step": step, "minutes": round(trained / 60, 3), "loss": sum(window) / len(window)})
    if dev_cuts is not None and step and (not dev_curve or dev_curve[-1]["step"] != step):
        evaluate()  # the last step counts too
    model.eval()
    summary: dict[str, Any] = {"steps": step, "train_minutes": trained / 60,
                               "train_loss": curve[-1]["loss"] if curve else None,
                               "curve": curve, "dev_curve": dev_curve}  # fmt: skip
    if "weights" in best:
        if best["step"] != step:
            with torch.no_grad():
                for name, param in weights.items():
                    param.copy_(best["weights"][name])
            log.info("keeping step %d, the lowest dev WER (%.3f; last step %.3f)", best["step"],
                     best["dev_wer"], dev_curve[-1]["dev_wer"])  # fmt: skip
        summary.update(best_step=best["step"], best_dev_wer=best["dev_wer"])
    return summary


def check_finetunable(cfg: SlamConfig) -> None:
    """The cache must hold what Whisper's decoder reads: the last layer after the final norm."""
    key = f"baseline.finetune_minutes={cfg.baseline.finetune_minutes}"
    if not recipe_of(cfg).answers_are_transcripts:
        raise ConfigError(f"{key}: Whisper's decoder is fine-tuned on transcripts, recipe {cfg.recipe!r} "
                          "has other answers; set baseline.finetune_minutes=0")  # fmt: skip
    enc = cfg.encoder
    if enc.name != "whisper" or enc.layer != -1 or enc.layer_weighting or enc.pooling != "none":
        raise ConfigError(f"{key}: Whisper's decoder reads the last layer of Whisper's encoder; the cache "
                          f"holds encoder.name={enc.name!r} layer={enc.layer} layer_weighting="
                          f"{enc.layer_weighting} pooling={enc.pooling!r}")  # fmt: skip
    info_path = Path(cfg.cache.dir) / INFO
    if info_path.exists() and "skipped" in (info := json.loads(info_path.read_text())):
        raise ConfigError(f"{key}: fine-tuning reads the encoder cache, which the cache stage skipped "
                          f"({info['skipped']}): rerun it with this baseline.finetune_minutes")  # fmt: skip


def clear_finetuned(out_dir: Path) -> None:
    """Remove an earlier run's fine-tuned hypotheses and summary (a set no longer asked for, or
    fine-tuning turned off), so the score stage never scores them."""
    for path in [*out_dir.glob(f"*.{FINETUNED}.jsonl"), out_dir / SUMMARY]:
        path.unlink(missing_ok=True)


def finetune_whisper(cfg: SlamConfig) -> dict[str, Any]:
    """Fine-tune Whisper's decoder on the cached training set and write ``<set>.finetuned.jsonl``
    for every set of ``baseline.sets``; log to the baseline stage's MLflow run (the one named in
    ``<baseline.dir>/run.json``, else a new "whisper" run). Returns the summary."""
    check_finetunable(cfg)
    device = setup_runtime(cfg.runtime)
    seed_everything(SEED)
    bc = cfg.baseline
    model = WhisperForConditionalGeneration.from_pretrained(cfg.encoder.path).to(device)
    tokenizer = AutoTokenizer.from_pretrained(cfg.encoder.path)
    prompt = prompting(model, tokenizer, cfg)
    train_cuts = load_cached_cuts(cfg, "train")
    dev_cuts = None
    if bc.finetune_dev_cuts:
        dev = load_cached_cuts(cfg, checked_dev_set(cfg, cfg.cache.dir))
        dev_cuts = dev.subset(first=min(bc.finetune_dev_cuts, len(dev)))
    out = Path(bc.dir)
    out.mkdir(parents=True, exist_ok=True)
    clear_finetuned(out)
    run_file = out / RUN_FILE
    run_id = json.loads(run_file.read_text())["mlflow_run_id"] if run_file.exists() else None
    with start_run(cfg, "whisper", run_id=run_id) as run:
        log.info("fine-tuning Whisper's decoder (%.1fM weights) for %.1f min on %d cached training cuts",
                 sum(p.numel() for p in decoder_parameters(model).values()) / 1e6, bc.finetune_minutes,
                 len(train_cuts))  # fmt: skip
        summary = train_decoder(model, tokenizer, prompt, train_cuts, dev_cuts, cfg, device)
        for row in summary["curve"]:
            mlflow.log_metric("finetune_loss", row["loss"], step=row["step"])
        for row in summary["dev_curve"]:
            mlflow.log_metric("finetune_dev_wer", row["dev_wer"], step=row["step"])
        summary["timing"] = {}
        for name in bc.sets:
            cuts = load_cached_cuts(cfg, name)
            start = time.monotonic()
            hyps = transcribe_cached(model, tokenizer, cuts, prompt, cfg, device)
            seconds = time.monotonic() - start
            write_hyps(out / f"{name}.{FINETUNED}.jsonl",
                       [{"id": c.id, "ref": cut_text(c), "hyp": hyps[c.id]} for c in cuts])  # fmt: skip
            summary["timing"][name] = {"utterances": len(cuts), "seconds": seconds,
                                       "rtf": seconds / max(sum(c.duration for c in cuts), 1e-9)}  # fmt: skip
            log.info("%s: %d fine-tuned greedy hypotheses written", name, len(cuts))
        mlflow.log_metrics({f"finetune_{k}": v for k, v in summary.items()
                            if k in ("steps", "train_minutes", "train_loss", "best_step", "best_dev_wer")
                            and v is not None})  # fmt: skip
        # named as decode_and_record names the shipped decoder's (rtf_<set>.beam1)
        mlflow.log_metrics({f"rtf_{name}.{FINETUNED}": t["rtf"] for name, t in summary["timing"].items()})
        atomic_write_json(out / SUMMARY, summary)
        if run_id is None:
            atomic_write_json(run_file, {"mlflow_run_id": run.info.run_id})
    return summary
