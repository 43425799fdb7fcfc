"""Several processes: torch.distributed as torchrun sets it up, and the few collectives slam uses.

Launch any stage with ``torchrun --nproc-per-node N pipelines/<stage>.py`` (add ``--nnodes``,
``--node-rank`` and ``--rdzv-endpoint`` for several machines). Without torchrun everything
here is a no-op and the world is one process.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from slam.config import RuntimeConfig


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", 1))


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", 0))


def is_main() -> bool:
    return rank() == 0


def init_distributed(cfg: RuntimeConfig) -> torch.device:
    """Join the process group when launched by torchrun; return this rank's device."""
    device = cfg.device
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device == "cuda":
        device = f"cuda:{local_rank}"
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        backend = cfg.backend or ("nccl" if device.startswith("cuda") else "gloo")
        dist.init_process_group(backend=backend)
        # leave the group before interpreter teardown: a rank exiting with live gloo threads
        # can abort ("terminate called without an active exception") after its work is done
        atexit.register(_leave_group)
    return torch.device(device)


def _leave_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def exit_after_stage() -> None:
    """Under torchrun, end a rank here once its stage has returned (every output written):
    all ranks meet, leave the group, flush, and exit without the interpreter's teardown. A rank
    that reaches that teardown with gloo's threads alive can abort with "terminate called
    without an active exception" (about one FSDP test run in four), which torchrun reports as
    a failed stage. One process: nothing to do."""
    if not dist.is_initialized():
        return
    dist.barrier()
    dist.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def sum_over_ranks(values: list[float]) -> list[float]:
    """Element-wise sum of a few numbers over all ranks (float64 on CPU: gloo and exactness)."""
    if not dist.is_initialized():
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return tensor.cpu().tolist()


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, on every rank."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def wrap_for_training(model: nn.Module, cfg: RuntimeConfig, device: torch.device) -> nn.Module:
    """DDP (replicas, gradients averaged) or FSDP (LLM layers sharded) when world_size > 1."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return model
    if cfg.strategy == "ddp":
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)
    if cfg.strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        # Shard each LLM block, then the rest; frozen and trainable weights may share a block
        # (LoRA), which FSDP2's per-parameter sharding allows.
        for layer in model.base_llm.get_decoder().layers:
            fully_shard(layer)
        fully_shard(model)
        return model
    raise ValueError(f"runtime.strategy={cfg.strategy!r}; known: ddp, fsdp")


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
