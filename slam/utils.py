"""Small shared helpers: atomic writes, seeding, devices, autocast."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import glob
import json
import logging
import os
import random
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from slam.config import RuntimeConfig

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """A temp file beside ``path`` for the block to write (ending in ``suffix``, for tools that
    pick a format from it); it replaces ``path`` only when the block succeeds, so readers never
    see half a file, and is removed when the block fails; one that a killed process left is
    removed by the next write of ``path`` (stages hold their directory's lock, so no one else
    is writing it). The one atomic-write helper."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*{suffix}"):  # of a killed earlier write
        stale.unlink(missing_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        tmp.chmod(0o644)  # mkstemp makes files private; these are ordinary outputs
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temp dir that replaces ``path`` only once the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    tmp.chmod(0o755)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)


class DirectoryLockedError(FileExistsError):
    """Another live process holds the lock on a directory; the message names it."""


LOCK_FILE = ".slam.lock"


@contextlib.contextmanager
def directory_lock(directory: str | Path, what: str) -> Iterator[Path]:
    """Hold ``<directory>/.slam.lock`` for the block, or raise :class:`DirectoryLockedError`
    naming the holder's pid and host (``what``: how the user names the directory).

    An flock, which the kernel drops when its process dies however it dies: a file left by a
    killed run is not held and is taken over. The pid and host in it only name the holder.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise DirectoryLockedError(f"{what} {directory} is in use by another run ({holder}); "
                                       f"lock file {path}") from None  # fmt: skip
        # the holder may have removed the file between our open and our lock: lock the new one
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        os.close(fd)
    try:
        left = _lock_holder(fd)
        if left != "pid unknown":
            log.warning("taking over the lock %s of a run that is gone (%s)", path, left)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        yield path
    finally:
        path.unlink(missing_ok=True)  # before the unlock: a waiting run then locks a new file
        os.close(fd)


def _lock_holder(fd: int) -> str:
    """``pid N on host H`` as written in a lock file."""
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"null")
        return f"pid {int(holder['pid'])} on host {holder['host']}"
    except (ValueError, TypeError, KeyError):  # empty (its holder is about to write it) or not ours
        return "pid unknown"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def setup_runtime(cfg: RuntimeConfig) -> torch.device:
    """Threads, and this process's device (joining torchrun's process group if launched so)."""
    from slam.train.distributed import init_distributed

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    return init_distributed(cfg)


_PRECISIONS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}


@functools.cache  # asked on every autocast, i.e. every step: the hardware does not change
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 / AMX), as oneDNN reports it."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def autocast_dtype(cfg: RuntimeConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype ``runtime.precision`` asks for on ``device`` (None: fp32).

    bf16 on a CPU without native bf16 runs fp32, with a warning: there torch emulates bf16
    matmuls, measured 200x slower than fp32 on an AVX2-only EPYC (a 0.3 s CTC warm-up step
    took 55 s), so the default recipe would take days instead of 30 minutes.
    """
    if cfg.precision not in _PRECISIONS:
        raise ValueError(f"runtime.precision={cfg.precision!r}; known: {', '.join(_PRECISIONS)}")
    dtype = _PRECISIONS[cfg.precision]
    if dtype is torch.bfloat16 and device.type == "cpu" and not cpu_has_native_bf16():
        _warn_emulated_bf16()
        return None
    return dtype


@functools.cache  # once per process
def _warn_emulated_bf16() -> None:
    log.warning("runtime.precision=bf16 but this CPU has no native bf16 (AVX512-BF16/AMX): "
                "running fp32, which is far faster here")


def autocast(cfg: RuntimeConfig, device: torch.device) -> contextlib.AbstractContextManager:
    dtype = autocast_dtype(cfg, device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
