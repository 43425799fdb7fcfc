"""Train the projector (+ LoRA) on top of frozen zoo models, resumably.

Read top to bottom: data (Lhotse dynamic bucketing over cached encoder outputs or raw audio),
model, optimiser and schedule, resume, the step loop (autocast, gradient accumulation,
clipping), periodic dev evaluation and checkpoints, and the final trained assets.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler
from safetensors.torch import load_file, save_file

from slam.cache import cache_dim, load_cached_cuts
from slam.config import SlamConfig
from slam.data import AudioTextDataset, load_cuts
from slam.model import SpeechLLM, build_speech_llm, save_assets
from slam.tracking import start_run
from slam.utils import atomic_dir, atomic_write_json, autocast, seed_everything, setup_runtime

log = logging.getLogger(__name__)

CHECKPOINTS = "checkpoints"
MODEL = "model"
TRAINABLE = "trainable.safetensors"
STATE = "trainer_state.pt"


def run_key(cfg: SlamConfig) -> str:
    """What a checkpoint must match to be resumed: everything that shapes the training."""
    train = dataclasses.asdict(cfg.train)
    for k in ("eval_every", "checkpoint_every", "log_every", "dev_max_cuts", "dir"):
        train.pop(k)
    payload = {
        "encoder": dataclasses.asdict(cfg.encoder),
        "projector": dataclasses.asdict(cfg.projector),
        "llm": dataclasses.asdict(cfg.llm),
        "peft": dataclasses.asdict(cfg.peft),
        "train": train,
        "corpus": dataclasses.asdict(cfg.corpus),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def lr_lambda(cfg: SlamConfig):
    """Linear warmup, constant, then cosine decay to ``lr * min_lr_ratio`` at ``max_steps``."""
    tc = cfg.train
    if not 0 <= tc.decay_fraction <= 1:
        raise ValueError(f"train.decay_fraction must be in [0, 1], got {tc.decay_fraction}")
    decay_start = max(tc.warmup_steps, int(tc.max_steps * (1 - tc.decay_fraction)))

    def factor(step: int) -> float:
        if step < tc.warmup_steps:
            return (step + 1) / tc.warmup_steps
        if step < decay_start:
            return 1.0
        progress = min(1.0, (step - decay_start) / max(1, tc.max_steps - decay_start))
        return tc.min_lr_ratio + (1 - tc.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def make_optimizer(model: SpeechLLM, cfg: SlamConfig) -> torch.optim.Optimizer:
    projector = [p for p in model.projector.parameters() if p.requires_grad]
    if model.ctc_blank is not None:
        projector.append(model.ctc_blank)
    projector_ids = {id(p) for p in projector}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in projector_ids]
    groups = [{"params": projector, "lr": cfg.train.lr}]
    if others:
        groups.append({"params": others, "lr": cfg.train.lora_lr})
    return torch.optim.AdamW(groups, weight_decay=cfg.train.weight_decay)


class Batches:
    """Endless epochs of dynamic-bucketing batches that can be fast-forwarded on resume."""

    def __init__(self, cuts: CutSet, dataset: AudioTextDataset, cfg: SlamConfig) -> None:
        self.sampler = DynamicBucketingSampler(
            cuts,
            max_duration=cfg.train.max_duration,
            num_buckets=cfg.train.num_buckets,
            shuffle=True,
            seed=cfg.train.seed,
            drop_last=False,
        )
        self.dataset = dataset
        self.epoch, self.in_epoch = 0, 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while True:
            self.sampler.set_epoch(self.epoch)
            for i, cuts in enumerate(self.sampler):
                if i < self.in_epoch:  # resume: skip batches already seen this epoch
                    continue
                self.in_epoch = i + 1
                yield self.dataset[cuts]
            self.epoch, self.in_epoch = self.epoch + 1, 0


# -- checkpoints -------------------------------------------------------------------------------
def save_checkpoint(directory: Path, model: SpeechLLM, optimizer, scheduler, state: dict) -> None:
    with atomic_dir(directory / f"step-{state['step']:07d}") as tmp:
        weights = {k: v.detach().contiguous() for k, v in model.trainable_state().items()}
        save_file(weights, str(tmp / TRAINABLE))
        torch.save(
            {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "rng": torch.get_rng_state()},
            tmp / STATE,
        )
        atomic_write_json(tmp / "state.json", state)
    for old in sorted(directory.glob("step-*"))[:-2]:  # keep the last two
        shutil.rmtree(old)


def latest_checkpoint(directory: Path, key: str) -> Path | None:
    for ckpt in sorted(directory.glob("step-*"), reverse=True):
        state_file = ckpt / "state.json"
        if state_file.exists() and json.loads(state_file.read_text()).get("run_key") == key:
            return ckpt
    return None


def load_checkpoint(ckpt: Path, model: SpeechLLM, optimizer, scheduler) -> dict:
    missing = model.load_state_dict(load_file(str(ckpt / TRAINABLE)), strict=False)
    if missing.unexpected_keys:
        raise ValueError(f"{ckpt} has unexpected parameters: {missing.unexpected_keys[:5]}")
    extra = torch.load(ckpt / STATE, weights_only=True)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["rng"])
    return json.loads((ckpt / "state.json").read_text())


# -- evaluation --------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: SpeechLLM, batches: list[CutSet], dataset, cfg: SlamConfig, device) -> dict:
    model.eval()
    loss_sum, correct, tokens = 0.0, 0, 0
    for cuts in batches:
        batch = dataset[cuts]
        with autocast(cfg.runtime, device):
            out = model(batch["inputs"].to(device), batch["lengths"].to(device), batch["targets"],
                        encoded=cfg.train.use_cache)
        loss_sum += out["loss"].item() * out["tokens"].item()
        correct += out["correct"].item()
        tokens += out["tokens"].item()
    model.train()
    return {"dev_loss": loss_sum / max(tokens, 1), "dev_acc": correct / max(tokens, 1)}


def write_curve(path: Path, rows: list[dict]) -> None:
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


# -- the stage ---------------------------------------------------------------------------------
def train(cfg: SlamConfig) -> dict:
    device = setup_runtime(cfg.runtime)
    seed_everything(cfg.train.seed)
    out_dir = Path(cfg.train.dir)
    ckpt_dir = out_dir / CHECKPOINTS
    metrics_dir = Path(cfg.score.dir) / cfg.recipe
    key = run_key(cfg)

    if cfg.train.use_cache:
        train_cuts, dev_cuts = load_cached_cuts(cfg, "train"), load_cached_cuts(cfg, "dev")
        model = build_speech_llm(cfg, encoder_dim=cache_dim(cfg))
    else:
        train_cuts, dev_cuts = load_cuts(cfg.corpus.dir, "train"), load_cuts(cfg.corpus.dir, "dev")
        model = build_speech_llm(cfg, with_encoder=True)
    model.to(device).train()
    dataset = AudioTextDataset(model.tokenizer, None if cfg.train.use_cache else model.encoder)
    dev_batches = list(
        DynamicBucketingSampler(
            dev_cuts.subset(first=min(cfg.train.dev_max_cuts, len(dev_cuts))),
            max_duration=cfg.train.max_duration, num_buckets=2, shuffle=False,
        )
    )
    n_trainable = sum(p.numel() for p in model.trainable_state().values())
    log.info("trainable parameters: %.2fM", n_trainable / 1e6)

    optimizer = make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg))
    batches = Batches(train_cuts, dataset, cfg)
    state = {"step": 0, "samples": 0, "elapsed": 0.0, "epoch": 0, "in_epoch": 0,
             "run_key": key, "curve": [], "dev_curve": [], "mlflow_run_id": None}
    ckpt = latest_checkpoint(ckpt_dir, key)
    if ckpt is not None:
        state = load_checkpoint(ckpt, model, optimizer, scheduler)
        batches.epoch, batches.in_epoch = state["epoch"], state["in_epoch"]
        log.info("resuming from %s (step %d)", ckpt, state["step"])

    with start_run(cfg, "llm", run_id=state["mlflow_run_id"]) as run:
        state["mlflow_run_id"] = run.info.run_id
        if ckpt is None:  # a resumed run logged it already
            mlflow.log_param("trainable_params", n_trainable)
        state = _loop(cfg, model, optimizer, scheduler, batches, dataset, dev_batches,
                      device, ckpt_dir, state)
        final_dev = evaluate(model, dev_batches, dataset, cfg, device)
        summary = {"steps": state["step"], "samples": state["samples"],
                   "train_minutes": state["elapsed"] / 60, "trainable_params": n_trainable,
                   "train_loss": state["curve"][-1]["loss"] if state["curve"] else None,
                   **final_dev}
        mlflow.log_metrics({k: v for k, v in final_dev.items()}, step=state["step"])
        info = {"mlflow_run_id": run.info.run_id, "run_key": key, "encoder": dataclasses.asdict(cfg.encoder),
                "llm": dataclasses.asdict(cfg.llm), "peft": dataclasses.asdict(cfg.peft),
                "prompt": cfg.train.prompt, "use_cache": cfg.train.use_cache}
        with atomic_dir(out_dir / MODEL) as tmp:
            save_assets(model, tmp, info)
        write_curve(metrics_dir / "train_curve.csv", state["curve"])
        write_curve(metrics_dir / "dev_curve.csv", state["dev_curve"])
        atomic_write_json(metrics_dir / "train.json", summary)
        mlflow.log_artifacts(str(metrics_dir), "metrics")
    return summary


def _loop(cfg, model, optimizer, scheduler, batches, dataset, dev_batches, device, ckpt_dir, state):
    tc = cfg.train
    window = {"loss": 0.0, "correct": 0, "tokens": 0, "samples": 0, "ctc": 0.0}
    start = time.monotonic() - state["elapsed"]
    micro = 0
    for batch in batches:
        if state["step"] >= tc.max_steps:
            break
        with autocast(cfg.runtime, device):
            out = model(batch["inputs"].to(device), batch["lengths"].to(device), batch["targets"],
                        encoded=tc.use_cache)
        objective = out["loss"]
        if "ctc_loss" in out:
            objective = objective + tc.ctc_weight * out["ctc_loss"]
            window["ctc"] += out["ctc_loss"].item() * len(batch["ids"])
        (objective / tc.grad_accum).backward()
        window["loss"] += out["loss"].item() * out["tokens"].item()
        window["correct"] += out["correct"].item()
        window["tokens"] += out["tokens"].item()
        window["samples"] += len(batch["ids"])
        state["samples"] += len(batch["ids"])
        micro += 1
        if micro % tc.grad_accum:
            continue
        torch.nn.utils.clip_grad_norm_(model.trainable_state().values(), tc.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        state["elapsed"] = time.monotonic() - start
        state["epoch"], state["in_epoch"] = batches.epoch, batches.in_epoch
        step = state["step"]
        if step % tc.log_every == 0:
            row = {"step": step, "samples": state["samples"], "minutes": round(state["elapsed"] / 60, 3),
                   "loss": window["loss"] / max(window["tokens"], 1),
                   "acc": window["correct"] / max(window["tokens"], 1),
                   "ctc_loss": window["ctc"] / max(window["samples"], 1),
                   "lr": scheduler.get_last_lr()[0],
                   "utt_per_s": window["samples"] / max(state["elapsed"] - state.get("_t", 0), 1e-6)}
            state["_t"] = state["elapsed"]
            state["curve"].append(row)
            mlflow.log_metrics({f"train_{k}": v for k, v in row.items() if k != "step"}, step=step)
            log.info("step %d loss %.3f acc %.3f ctc %.3f lr %.2e %.1f utt/s", step, row["loss"],
                     row["acc"], row["ctc_loss"], row["lr"], row["utt_per_s"])
            window = {"loss": 0.0, "correct": 0, "tokens": 0, "samples": 0, "ctc": 0.0}
        if step % tc.eval_every == 0 or step == tc.max_steps:
            dev = evaluate(model, dev_batches, dataset, cfg, device)
            state["dev_curve"].append({"step": step, "samples": state["samples"],
                                       "minutes": round(state["elapsed"] / 60, 3), **dev})
            mlflow.log_metrics(dev, step=step)
            log.info("step %d dev loss %.3f acc %.3f", step, dev["dev_loss"], dev["dev_acc"])
        if step % tc.checkpoint_every == 0 or step == tc.max_steps:
            save_checkpoint(ckpt_dir, model, optimizer, scheduler, state)
    return state
