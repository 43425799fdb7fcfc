"""One loop for the small CTC fits on encoder outputs: the hotword filter's head
(``slam.tasks.ctc_filter``) and the projector's CTC warm-up (``slam.train.loop``).

Both train a few million parameters without the LLM, so they take big batches and a few
minutes; what differs is only the parameters and how a batch becomes a loss.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from lhotse import CutSet
from lhotse.dataset import DynamicBucketingSampler
from tqdm import tqdm

from slam.data.cuts import AudioTextDataset

log = logging.getLogger(__name__)


def fit_ctc(
    params: list[torch.nn.Parameter],
    loss_of: Callable[[dict[str, Any]], torch.Tensor],
    cuts: CutSet,
    dataset: AudioTextDataset,
    steps: int,
    lr: float,
    max_duration: float,
    seed: int = 0,
    warmup_steps: int = 0,
    max_grad_norm: float | None = None,
    name: str = "ctc",
) -> float:
    """AdamW on ``params`` for ``steps`` batches of up to ``max_duration`` seconds; ``loss_of``
    maps a dataset batch to the loss. A linear LR warm-up over ``warmup_steps``, then constant.
    Returns the mean loss of the last 20 steps."""
    optimizer = torch.optim.AdamW(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(warmup_steps, 1))
    )
    # One process's stream (world_size=1): under torchrun every rank fits the same parameters
    # on the same batches, so they agree without communicating.
    sampler = DynamicBucketingSampler(
        cuts, max_duration=max_duration, num_buckets=4, shuffle=True, seed=seed,
        drop_last=False, world_size=1, rank=0,
    )  # fmt: skip
    step, epoch, recent = 0, 0, []
    with tqdm(total=steps, desc=name, unit="step", mininterval=10) as bar:
        while step < steps:
            sampler.set_epoch(epoch)
            for batch_cuts in sampler:
                if step >= steps:
                    break
                loss = loss_of(dataset[batch_cuts])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
                optimizer.step()
                schedule.step()
                step += 1
                recent = (recent + [loss.item()])[-20:]
                bar.update()
                if step % 50 == 0:
                    log.info("%s step %d loss %.3f", name, step, float(np.mean(recent)))
            epoch += 1
    optimizer.zero_grad(set_to_none=True)
    return float(np.mean(recent)) if recent else float("nan")
