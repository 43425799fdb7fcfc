"""Train the projector (+ LoRA) on top of frozen zoo models, resumably.

Read top to bottom: data (Lhotse dynamic bucketing over cached encoder outputs or raw audio),
model, optimiser and schedule, resume, the step loop (autocast, gradient accumulation,
clipping), periodic dev evaluation and checkpoints, and the final trained assets.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import mlflow
import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from slam.config import RuntimeConfig, SlamConfig
from slam.data.cache import checked_dev_set, load_cached_cuts
from slam.data.cuts import AudioTextDataset, batches_of, fit_window, load_cuts
from slam.model.ctc import fit_ctc
from slam.model.speech_llm import (
    MODEL,
    SpeechLLM,
    assets_digest,
    build_speech_llm,
    init_from_trained,
    trained_model_dir,
)
from slam.model.tuning import uses_cache
from slam.recipes import Recipe, recipe_of
from slam.score.metrics.normalize import normalize
from slam.track.tracking import start_run
from slam.train.distributed import (
    barrier,
    is_main,
    rank,
    sum_over_ranks,
    unwrap,
    world_size,
    wrap_for_training,
)
from slam.utils import (
    atomic_dir,
    atomic_path,
    atomic_write_json,
    autocast,
    directory_lock,
    seed_everything,
    setup_runtime,
)

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
TRAINABLE = "trainable.safetensors"
STATE = "trainer_state.pt"
BEST = "best"  # the evaluated checkpoint with the lowest dev WER (train.keep_best)


def run_key(cfg: SlamConfig) -> str:
    """What a checkpoint must match to be resumed: everything that shapes the training."""
    train = dataclasses.asdict(cfg.train)
    for k in ("eval_every", "checkpoint_every", "log_every", "dev_max_cuts", "dir", "keep_best"):
        train.pop(k)
    corpus = dataclasses.asdict(cfg.corpus)
    # settings added after runs were keyed: when off, left out, so those runs keep their key
    added_later = {"init_from": train, "lr_restarts": train, "message_utterances": corpus,
                   "spoken_form_utterances": corpus}  # fmt: skip
    for key, section in added_later.items():
        if not section[key]:
            section.pop(key)
    payload = {
        "encoder": dataclasses.asdict(cfg.encoder),
        "projector": dataclasses.asdict(cfg.projector),
        "llm": dataclasses.asdict(cfg.llm),
        "peft": dataclasses.asdict(cfg.peft),
        "train": train,
        "corpus": corpus,
    }
    if cfg.train.init_from:  # the weights it starts from, not only their path
        payload["init_digest"] = assets_digest(trained_model_dir(cfg.train.init_from))
    payload.update(recipe_of(cfg).run_key(cfg))  # e.g. the biasing lists shape every prompt
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def lr_lambda(cfg: SlamConfig):
    """Linear warmup, constant, then cosine decay to ``lr * min_lr_ratio`` at ``max_steps``;
    each of ``lr_restarts`` ends a segment so (its decay over the last ``decay_fraction`` of the
    steps up to it) and sends the rate back to its peak."""
    tc = cfg.train
    if not 0 <= tc.decay_fraction <= 1:
        raise ValueError(f"train.decay_fraction must be in [0, 1], got {tc.decay_fraction}")
    restarts = list(tc.lr_restarts)
    if restarts != sorted(set(restarts)) or any(not 0 < r < tc.max_steps for r in restarts):
        raise ValueError(f"train.lr_restarts must be increasing steps between 0 and train.max_steps "
                         f"({tc.max_steps}), got {restarts}")  # fmt: skip
    starts, ends = [0, *restarts], [*restarts, tc.max_steps]

    def factor(step: int) -> float:
        if step < tc.warmup_steps:
            return (step + 1) / tc.warmup_steps
        segment = bisect.bisect_right(restarts, step)
        end = ends[segment]
        decay_start = max(tc.warmup_steps, starts[segment], int(end * (1 - tc.decay_fraction)))
        if step < decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start) / max(1, end - decay_start))
        return tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def make_optimizer(model: SpeechLLM, cfg: SlamConfig) -> torch.optim.Optimizer:
    projector = [p for p in model.projector.parameters() if p.requires_grad]
    if model.ctc_blank is not None:
        projector.append(model.ctc_blank)
    # the encoder's opened layers are pretrained weights, not adapters: a rate of their own (its
    # new layer-mixing weights, if any, are not pretrained and stay with the adapters)
    opened = [p for p in model.encoder.parameters() if p.requires_grad] if model.encoder is not None else []
    mixing = getattr(model.encoder, "layer_weights", None)
    encoder = [p for p in opened if p is not mixing]
    taken = {id(p) for p in projector + encoder}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
    groups = [{"params": projector, "lr": cfg.train.lr}]
    if others:
        groups.append({"params": others, "lr": cfg.train.lora_lr})
    if encoder:
        groups.append({"params": encoder, "lr": cfg.train.encoder_lr})
    return torch.optim.AdamW(groups, weight_decay=cfg.train.weight_decay)


class Batches:
    """Endless epochs of dynamic-bucketing batches that can be fast-forwarded on resume."""

    def __init__(self, cuts: CutSet, dataset: AudioTextDataset, cfg: SlamConfig) -> None:
        # Each rank takes every world_size-th batch of one shared stream. Without bucket
        # syncing that stream does not depend on the world size, so N processes see exactly
        # the batches one process with grad_accum=N sees, and the curves match.
        self.sampler = DynamicBucketingSampler(
            cuts,
            max_duration=cfg.train.max_duration,
            num_buckets=cfg.train.num_buckets,
            shuffle=True,
            seed=cfg.train.seed,
            drop_last=False,
            sync_buckets=False,
            world_size=world_size(),
            rank=rank(),
        )
        self.dataset = dataset
        self.epoch, self.in_epoch = 0, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            self.sampler.set_epoch(self.epoch)
            self.dataset.epoch = self.epoch  # training biasing lists are drawn anew each epoch
            for i, cuts in enumerate(self.sampler):
                if i < self.in_epoch:  # resume: skip batches already seen this epoch
                    continue
                self.in_epoch = i + 1
                yield self.dataset[cuts]
            self.epoch, self.in_epoch = self.epoch + 1, 0


# -- checkpoints -------------------------------------------------------------------------------
# torch.distributed.checkpoint's state-dict API gathers full tensors of the trainable parameters
# and optimizer state the same way for one process, DDP and FSDP shards (every rank calls it).
GATHER = StateDictOptions(full_state_dict=True, cpu_offload=True, ignore_frozen_params=True)


def save_checkpoint(directory: Path, model: torch.nn.Module, optimizer, scheduler, state: dict) -> None:
    """``model`` is what trains (bare, DDP or FSDP); every rank calls this, rank 0 writes."""
    weights = gathered_trainable(model)
    optim_state = get_optimizer_state_dict(model, optimizer, options=GATHER)
    if is_main():
        key = state["run_key"]
        target = directory / f"step-{state['step']:07d}"
        if target.exists() and checkpoint_key(target) != key:  # another run's step: not ours to replace
            target = target.with_name(f"{target.name}-{key}")
        with atomic_dir(target) as tmp:
            save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / TRAINABLE))
            torch.save({"optimizer": optim_state, "scheduler": scheduler.state_dict(),
                        "rng": torch.get_rng_state()}, tmp / STATE)
            atomic_write_json(tmp / "state.json", state)
        # keep this run's last two; other runs' checkpoints in a shared directory are theirs
        for old in run_checkpoints(directory, key)[:-2]:
            shutil.rmtree(old)
    barrier()


def best_record(key: str, step: int, dev_wer: float) -> dict:
    """What ``best/state.json`` holds (:func:`restore_best` reads it)."""
    return {"run_key": key, "step": step, "dev_wer": dev_wer}


def save_best(directory: Path, model: torch.nn.Module, state: dict) -> None:
    """The trainable weights of the evaluated step with the lowest dev WER so far."""
    weights = gathered_trainable(model)
    if is_main():
        with atomic_dir(directory / BEST) as tmp:
            save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / TRAINABLE))
            atomic_write_json(tmp / "state.json", best_record(state["run_key"], state["best_step"],
                                                              state["best_dev_wer"]))
    barrier()


def restore_best(directory: Path, model: torch.nn.Module, key: str) -> dict | None:
    """Load the best-by-dev-WER weights of this run (``key``) into ``model``; their record."""
    record_file = directory / BEST / "state.json"
    if not record_file.exists():
        return None
    record = json.loads(record_file.read_text())
    if record.get("run_key") != key:  # another run's best, left in a shared directory
        return None
    load_trainable(directory / BEST, model)
    return record


def trainable_only(weights: dict[str, torch.Tensor], model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The entries of trainable parameters. ``ignore_frozen_params`` misses the second name of
    a tied weight (SmolLM2's ``lm_head`` is its frozen token embeddings: 28M parameters that
    would go into every checkpoint and fail the resume's check)."""
    names = {n for n, p in unwrap(model).named_parameters() if p.requires_grad}
    return {k: v for k, v in weights.items() if k in names}


def checkpoint_key(ckpt: Path) -> str | None:
    """The run key in a checkpoint's ``state.json``; ``None`` when it is missing or unreadable."""
    try:
        state = json.loads((ckpt / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return state.get("run_key") if isinstance(state, dict) else None


def run_checkpoints(directory: Path, key: str) -> list[Path]:
    """The checkpoints of run ``key`` in ``directory``, oldest first."""
    return [ckpt for ckpt in sorted(directory.glob("step-*")) if checkpoint_key(ckpt) == key]


def checkpoint_damage(ckpt: Path) -> str | None:
    """What makes ``ckpt`` unloadable (a file cut short or missing), or ``None`` when intact.
    Read in full, without touching the model: a failed load half-way would leave it mixed."""
    try:
        load_file(str(ckpt / TRAINABLE))
        torch.load(ckpt / STATE, weights_only=True, map_location="cpu")
    except Exception as exc:  # safetensors, zip and unpickling errors all mean the same here
        return str(exc).split("\n", 1)[0][:200] or type(exc).__name__
    return None


def latest_checkpoint(directory: Path, key: str) -> Path | None:
    """The newest intact checkpoint of run ``key``; damaged ones are skipped with a warning."""
    for ckpt in sorted(directory.glob("step-*"), reverse=True):
        owner = checkpoint_key(ckpt)
        if owner is None:
            log.warning("skipping checkpoint %s: its state.json is missing or unreadable", ckpt)
            continue
        if owner != key:
            continue
        damage = checkpoint_damage(ckpt)
        if damage is None:
            return ckpt
        log.warning("skipping checkpoint %s: %s", ckpt, damage)
    return None


def gathered_trainable(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Full tensors of the trainable parameters (collective: every rank calls it)."""
    return trainable_only(get_model_state_dict(model, options=GATHER), model)


def load_trainable(ckpt: Path, model: torch.nn.Module) -> None:
    """Put the trainable weights saved in ``ckpt`` into ``model`` (bare, DDP or FSDP)."""
    weights = load_file(str(ckpt / TRAINABLE))
    model_keys, trained = set(unwrap(model).state_dict()), trainable_only(weights, model)
    # a frozen weight's second name, written by an earlier version (see trainable_only): dropped
    weights = {k: v for k, v in weights.items() if k in trained or k not in model_keys}
    unknown = set(weights) - {n for n, p in unwrap(model).named_parameters() if p.requires_grad}
    if unknown:
        raise ValueError(f"{ckpt} has parameters this model does not train: {sorted(unknown)[:5]}")
    set_model_state_dict(model, weights, options=StateDictOptions(full_state_dict=True, strict=False))


def load_checkpoint(ckpt: Path, model: torch.nn.Module, optimizer, scheduler) -> dict:
    load_trainable(ckpt, model)
    full = StateDictOptions(full_state_dict=True, strict=False)
    extra = torch.load(ckpt / STATE, weights_only=True)
    set_optimizer_state_dict(model, optimizer, extra["optimizer"], options=full)
    scheduler.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["rng"])
    return json.loads((ckpt / "state.json").read_text())


def warmup_loss(model: SpeechLLM, batch: dict[str, Any], runtime: RuntimeConfig, device) -> torch.Tensor:
    """The warm-up's loss of one batch: CTC of the projected audio, no LLM forward."""
    with autocast(runtime, device):
        inputs, lengths = batch["inputs"].to(device), batch["lengths"].to(device)
        audio, lengths = model.audio_embeddings(inputs, lengths, batch["encoded"])
        return model.ctc_loss(audio, lengths, batch["ctc_targets"])


def ctc_warmup(model: SpeechLLM, cuts: CutSet, dataset: AudioTextDataset, cfg: SlamConfig, device) -> dict:
    """Fit the projector (and the CTC blank) alone to the auxiliary CTC loss, without the LLM.

    Cheap (the LLM never runs) and it answers the long plateau of joint training: the LLM
    meets audio embeddings that already lie near the embeddings of the spoken tokens.
    """
    tc = cfg.train
    start = time.monotonic()
    params = [p for p in model.projector.parameters() if p.requires_grad] + [model.ctc_blank]
    loss_of = partial(warmup_loss, model, runtime=cfg.runtime, device=device)
    loss = fit_ctc(params, loss_of, cuts, dataset, tc.ctc_warmup_steps, tc.ctc_warmup_lr,
                   tc.ctc_warmup_max_duration, seed=tc.seed, warmup_steps=min(50, tc.ctc_warmup_steps),
                   max_grad_norm=tc.max_grad_norm, name="ctc warm-up")  # fmt: skip
    model.zero_grad(set_to_none=True)  # a tuned encoder collected gradients it must not keep
    minutes = (time.monotonic() - start) / 60
    log.info("CTC warm-up: %d steps in %.1f min, loss %.3f", tc.ctc_warmup_steps, minutes, loss)
    return {"steps": tc.ctc_warmup_steps, "minutes": minutes, "loss": loss}


# -- evaluation --------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(
    model, batches: list[CutSet], dataset, cfg: SlamConfig, device, wer_cuts: CutSet | None = None
) -> dict:
    """Dev loss and answer-token accuracy (the batches are shared out over the ranks), and
    greedy WER on ``wer_cuts`` when given."""
    model.eval()
    loss_sum, correct, tokens = 0.0, 0, 0
    # Every rank runs the same number of forwards (FSDP gathers weights collectively in each):
    # a rank short of batches repeats one and does not count it.
    per_rank = -(-len(batches) // world_size())
    for i in range(per_rank):
        index = i * world_size() + rank()
        counted = index < len(batches)
        batch = dataset[batches[index if counted else 0]]
        with autocast(cfg.runtime, device):
            out = model(batch["inputs"].to(device), batch["lengths"].to(device), batch["targets"],
                        encoded=dataset.encoder is None, instructions=batch.get("instructions"),
                        ctc_targets=batch["ctc_targets"])
        if counted:
            loss_sum += out["loss"].item() * out["tokens"].item()
            correct += out["correct"].item()
            tokens += out["tokens"].item()
    loss_sum, correct, tokens = sum_over_ranks([loss_sum, correct, tokens])
    result = {"dev_loss": loss_sum / max(tokens, 1), "dev_acc": correct / max(tokens, 1)}
    if wer_cuts is not None:
        hyps, refs = {}, {}
        for batch_cuts in batches_of(wer_cuts, cfg.decode.batch_size):
            batch = dataset[batch_cuts]
            texts = unwrap(model).transcribe_batch(batch, cfg.runtime, cfg.decode)
            hyps.update(zip(batch["ids"], texts))
            refs.update(zip(batch["ids"], batch["texts"]))
        result["dev_wer"] = recipe_of(cfg).dev_error(cfg, refs, hyps)
    model.train()
    return result


def write_curve(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


# -- the stage ---------------------------------------------------------------------------------
def train(cfg: SlamConfig) -> dict:
    """The train stage; under torchrun every rank calls it and rank 0 logs and writes.

    Rank 0 holds a lock on ``train.dir`` throughout: two runs writing one directory would leave
    one's model beside the other's metrics."""
    device = setup_runtime(cfg.runtime)
    with directory_lock(cfg.train.dir, "train.dir") if is_main() else contextlib.nullcontext():
        return _train(cfg, device)


def _model_and_cuts(
    cfg: SlamConfig, recipe: Recipe, use_cache: bool
) -> tuple[SpeechLLM, CutSet, CutSet, dict[str, int]]:
    """A fresh model and the train and dev cuts it reads: cached encoder outputs, or audio
    (then cuts longer than the encoder's window are kept, heard up to it as the cache stage
    stores them, and counted per set in the last item)."""
    dev_set = checked_dev_set(cfg, cfg.cache.dir if use_cache else cfg.corpus.dir)
    if use_cache:
        model = build_speech_llm(cfg, encoder_dim=recipe.llm_input_dim(cfg))
        return model, load_cached_cuts(cfg, "train"), load_cached_cuts(cfg, dev_set), {}
    model = build_speech_llm(cfg, with_encoder=True)
    window = model.encoder.window_seconds  # longer audio is cut short in the step
    sets, truncated = {}, {}
    for name in ("train", dev_set):
        cuts = load_cuts(cfg.corpus.dir, name)
        sets[name], n = fit_window(cuts, window, f"set {name}", "truncate")
        if n:
            truncated[name] = n
    return model, sets["train"], sets[dev_set], truncated



def _dev_sets(cfg: SlamConfig, dev_cuts: CutSet) -> tuple[list[CutSet], CutSet | None]:
    """The dev loss's fixed batches (``train.dev_max_cuts``) and the cuts decoded free-running
    for the dev WER (``train.dev_wer_cuts``; None: no dev WER)."""
    tc = cfg.train
    dev_batches = list(DynamicBucketingSampler(
        dev_cuts.subset(first=min(tc.dev_max_cuts, len(dev_cuts))),
        max_duration=tc.max_duration, num_buckets=2, shuffle=False, world_size=1, rank=0,
    ))  # fmt: skip
    n_wer = min(tc.dev_wer_cuts, len(dev_cuts))
    return dev_batches, dev_cuts.subset(first=n_wer) if n_wer else None


def _train(cfg: SlamConfig, device: torch.device) -> dict:
    seed_everything(cfg.train.seed)
    out_dir = Path(cfg.train.dir)
    ckpt_dir = out_dir / CHECKPOINTS
    metrics_dir = Path(cfg.score.dir) / cfg.recipe
    key = run_key(cfg)
    recipe = recipe_of(cfg)
    use_cache = uses_cache(cfg)
    model, train_cuts, dev_cuts, truncated = _model_and_cuts(cfg, recipe, use_cache)
    init_digest = init_from_trained(model, cfg) if cfg.train.init_from else None
    if init_digest:
        log.info("starting from %s (weights %s)", cfg.train.init_from, init_digest)
    model.to(device).train()
    if cfg.runtime.gradient_checkpointing:
        model.base_llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    recipe.check_training(cfg, use_cache)
    rows = recipe.training_rows(cfg, train_cuts, dev_cuts)
    normalizer = cfg.train.answer_normalizer
    answer_text = partial(normalize, name=normalizer) if normalizer else None
    dataset = AudioTextDataset(model.tokenizer, None if use_cache else model.encoder, rows.instruction,
                               rows.target, rows.features, answer_text)  # fmt: skip
    # dev rows keep the lists and captions of epoch 0 and the curriculum's last stage, so that
    # dev losses stay comparable along the run and measure what is decoded
    dev_dataset = AudioTextDataset(model.tokenizer, dataset.encoder, rows.instruction, rows.target,
                                   rows.features, answer_text)  # fmt: skip
    dev_dataset.step = cfg.train.max_steps
    dev_batches, wer_cuts = _dev_sets(cfg, dev_cuts)
    if model.ctc_blank is not None:
        model.restrict_ctc(dataset.token_counts(train_cuts), cfg.train.ctc_min_count)
    n_trainable = sum(p.numel() for p in model.trainable_state().values())
    log.info("trainable parameters: %.2fM; %d process(es)", n_trainable / 1e6, world_size())

    ckpt = latest_checkpoint(ckpt_dir, key)
    warmup = None
    if ckpt is None and cfg.train.ctc_warmup_steps > 0:  # a checkpoint holds the warmed projector
        warmup = ctc_warmup(model, train_cuts, dataset, cfg, device)

    # What runs the steps: DDP, FSDP or the model itself. FSDP swaps in sharded parameters,
    # so the optimizer is made after it.
    net = wrap_for_training(model, cfg.runtime, device)
    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    batches = Batches(train_cuts, dataset, cfg)
    state = {"step": 0, "samples": 0, "elapsed": 0.0, "epoch": 0, "in_epoch": 0,
             "run_key": key, "curve": [], "dev_curve": [], "mlflow_run_id": None}
    if ckpt is not None:
        state = load_checkpoint(ckpt, net, optimizer, scheduler)
        batches.epoch, batches.in_epoch = state["epoch"], state["in_epoch"]
        log.info("resuming from %s (step %d)", ckpt, state["step"])
    elif warmup is not None:  # its minutes count as training time; a checkpoint keeps its work
        state["ctc_warmup"] = warmup
        state["elapsed"] = warmup["minutes"] * 60
        save_checkpoint(ckpt_dir, net, optimizer, scheduler, state)

    run = start_run(cfg, "llm", run_id=state["mlflow_run_id"]) if is_main() else contextlib.nullcontext()
    with run:
        if is_main():
            state["mlflow_run_id"] = run.info.run_id
            if ckpt is None:  # a resumed run logged it already
                mlflow.log_param("trainable_params", n_trainable)
                if init_digest:
                    mlflow.log_param("init_digest", init_digest)
        state = TrainingRun(cfg, device, model, net, optimizer, scheduler, batches, dev_dataset, dev_batches,
                            wer_cuts, ckpt_dir, state).loop()
        final_dev = state["dev_curve"][-1] if state["dev_curve"] else {}
        final_dev = {k: v for k, v in final_dev.items() if k.startswith("dev_")}
        best = None
        if cfg.train.keep_best and state.get("best_step") not in (None, state["step"]):
            best = restore_best(ckpt_dir, net, key)
            if best is not None:
                log.info("keeping step %d, the lowest dev WER (%.3f; last step %.3f)",
                         best["step"], best["dev_wer"], final_dev.get("dev_wer", math.nan))
        summary = {"steps": state["step"], "samples": state["samples"],
                   "train_minutes": state["elapsed"] / 60, "trainable_params": n_trainable,
                   "world_size": world_size(),
                   **{f"ctc_warmup_{k}": v for k, v in state.get("ctc_warmup", {}).items()},
                   "train_loss": state["curve"][-1]["loss"] if state["curve"] else None,
                   **final_dev}
        if truncated:  # cuts longer than the encoder's window, kept cut at it (as the cache stores them)
            summary["truncated_too_long"] = truncated
        if "best_step" in state and cfg.train.keep_best:  # the model saved below is this step
            summary["best_step"] = best["step"] if best else state["step"]
            summary["best_dev_wer"] = best["dev_wer"] if best else final_dev.get("dev_wer")
        summary.update(rows.summary)
        # models fitted after the LLM (a hotword filter's CTC head, a contrastive model)
        writers = []
        if is_main():
            writers = recipe.after_training(cfg, train_cuts, rows, model, dataset, device, summary)
        weights = get_model_state_dict(net, options=GATHER)  # collective under FSDP
        if is_main():
            mlflow.log_metrics(final_dev, step=state["step"])
            to_save = model
            if world_size() > 1 and cfg.runtime.strategy == "fsdp":
                # FSDP holds shards: save from a plain model given the gathered weights
                to_save = build_speech_llm(cfg, encoder_dim=recipe.llm_input_dim(cfg) if use_cache else None,
                                           with_encoder=not use_cache)
                to_save.load_state_dict(weights, strict=False)
            # the composed config travels with the model (SpeechLLM.from_pretrained, `slam`)
            to_save.save_pretrained(out_dir / MODEL, writers, mlflow_run_id=state["mlflow_run_id"],
                                    run_key=key, use_cache=use_cache)  # fmt: skip
            mlflow.log_artifacts(str(out_dir / MODEL), "model")
            write_curve(metrics_dir / "train_curve.csv", state["curve"])
            write_curve(metrics_dir / "dev_curve.csv", state["dev_curve"])
            atomic_write_json(metrics_dir / "train.json", summary)
            for name in ("train_curve.csv", "dev_curve.csv", "train.json"):  # not the folder: it
                mlflow.log_artifact(str(metrics_dir / name), "metrics")  # holds the last run's table
    barrier()
    return summary


@dataclass
class TrainingRun:
    """What one training run holds while it steps. ``state`` is what a checkpoint saves
    (step, samples, minutes, epoch position, curves, best dev WER, MLflow run id)."""

    cfg: SlamConfig
    device: torch.device
    model: SpeechLLM  # the bare model
    net: torch.nn.Module  # what runs forward/backward: DDP, FSDP or the model itself
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    batches: Batches
    dev_dataset: AudioTextDataset
    dev_batches: list[CutSet]
    wer_cuts: CutSet | None  # dev cuts decoded free-running at each evaluation
    ckpt_dir: Path
    state: dict[str, Any]
    window: dict[str, float] = field(default_factory=dict)  # sums since the last log line

    def loop(self) -> dict[str, Any]:
        """Steps until ``train.max_steps``: forward and backward per batch, an optimizer step
        every ``grad_accum`` batches, then logging, dev evaluation and checkpoints on their
        schedules."""
        tc = self.cfg.train
        start = time.monotonic() - self.state["elapsed"]
        self.window = _empty_window()
        self.batches.dataset.step = self.state["step"]
        for micro, batch in enumerate(self.batches, 1):
            if self.state["step"] >= tc.max_steps:
                break
            self.forward_backward(batch)
            if micro % tc.grad_accum:
                continue
            self.optimizer_step(time.monotonic() - start)
            step = self.state["step"]
            if step % tc.log_every == 0:
                self.log_window()
            if step % tc.eval_every == 0 or step == tc.max_steps:
                self.evaluate()
            if step % tc.checkpoint_every == 0 or step == tc.max_steps:
                save_checkpoint(self.ckpt_dir, self.net, self.optimizer, self.scheduler, self.state)
        return self.state

    def forward_backward(self, batch: dict[str, Any]) -> None:
        tc, window, device = self.cfg.train, self.window, self.device
        with autocast(self.cfg.runtime, device):
            out = self.net(batch["inputs"].to(device), batch["lengths"].to(device), batch["targets"],
                           encoded=self.dev_dataset.encoder is None, instructions=batch.get("instructions"),
                           ctc_targets=batch["ctc_targets"])
        objective = out["loss"]
        if "ctc_loss" in out:
            objective = objective + tc.ctc_weight * out["ctc_loss"]
            window["ctc"] += out["ctc_loss"].item() * len(batch["ids"])
        (objective / tc.grad_accum).backward()
        window["loss"] += out["loss"].item() * out["tokens"].item()
        window["correct"] += out["correct"].item()
        window["tokens"] += out["tokens"].item()
        window["samples"] += len(batch["ids"])

    def optimizer_step(self, elapsed: float) -> None:
        torch.nn.utils.clip_grad_norm_(self.model.trainable_state().values(), self.cfg.train.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        state = self.state
        state["step"] += 1
        self.batches.dataset.step = state["step"]
        state["elapsed"] = elapsed
        state["epoch"], state["in_epoch"] = self.batches.epoch, self.batches.in_epoch

    def log_window(self) -> None:
        """One row of the training curve: the sums since the last row, over every rank."""
        state, keys = self.state, list(self.window)
        window = dict(zip(keys, sum_over_ranks([self.window[k] for k in keys])))  # global batch
        state["samples"] += int(window["samples"])
        row = {"step": state["step"], "samples": state["samples"], "minutes": round(state["elapsed"] / 60, 3),
               "loss": window["loss"] / max(window["tokens"], 1),
               "acc": window["correct"] / max(window["tokens"], 1),
               "ctc_loss": window["ctc"] / max(window["samples"], 1),
               "lr": self.scheduler.get_last_lr()[0],
               "utt_per_s": window["samples"] / max(state["elapsed"] - state.get("_t", 0), 1e-6)}
        state["_t"] = state["elapsed"]
        state["curve"].append(row)
        if is_main():
            mlflow.log_metrics({f"train_{k}": v for k, v in row.items() if k != "step"}, step=row["step"])
        log.info("step %d loss %.3f acc %.3f ctc %.3f lr %.2e %.1f utt/s", row["step"], row["loss"],
                 row["acc"], row["ctc_loss"], row["lr"], row["utt_per_s"])
        self.window = _empty_window()

    def evaluate(self) -> None:
        """Dev loss and free-running dev WER; the weights of the best dev WER so far are kept."""
        state, step = self.state, self.state["step"]
        dev = evaluate(self.net, self.dev_batches, self.dev_dataset, self.cfg, self.device, self.wer_cuts)
        state["dev_curve"].append({"step": step, "samples": state["samples"],
                                   "minutes": round(state["elapsed"] / 60, 3), **dev})
        if is_main():
            mlflow.log_metrics(dev, step=step)
        log.info("step %d dev %s", step, " ".join(f"{k[4:]} {v:.3f}" for k, v in dev.items()))
        if "dev_wer" in dev and dev["dev_wer"] < state.get("best_dev_wer", math.inf):
            state["best_dev_wer"], state["best_step"] = dev["dev_wer"], step
            save_best(self.ckpt_dir, self.net, state)


def _empty_window() -> dict[str, float]:
    return {"loss": 0.0, "correct": 0, "tokens": 0, "samples": 0, "ctc": 0.0}
