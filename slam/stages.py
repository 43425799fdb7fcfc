"""What every ``pipelines/*.py`` entrypoint shares: logging, config loading, clean errors."""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from slam.config import ConfigError, SlamConfig, load_config
from slam.registry import UnknownComponentError

# Errors whose message already says what is wrong and where: no traceback for these. (OS
# errors about a path name the path; other OSErrors may be bugs and keep their traceback.)
USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    UnknownComponentError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


# What a rerun keeps after Ctrl-C, by stage function; the others start again.
RESUMES = {
    "train": "rerun to resume from the last checkpoint",
    "build_cache": "rerun to keep the finished sets and encode the rest",
    "decode": "rerun to keep the finished hypothesis files and decode the rest",
    "decode_baseline": "rerun to keep the finished hypothesis files and decode the rest",
}


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (a log or CI summary shows the whole of it)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def run_stage(stage: Callable[[SlamConfig], Any] | str, params: str = "params.yaml") -> Any:
    """Load ``params``, run ``stage``; a user error prints one line naming it and exits 1,
    Ctrl-C one line saying what a rerun keeps and exits 130 (the shell's code for SIGINT).
    ``stage`` may be ``"module:function"``, imported here: a Ctrl-C during the seconds torch
    and transformers take to import is then caught too."""
    logging.basicConfig(
        level=os.environ.get("SLAM_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        from slam.data.corpora.validate import BadInputError

        errors = USER_ERRORS + (BadInputError,)
    except ImportError:  # pragma: no cover - corpora not importable
        errors = USER_ERRORS
    name = stage.rpartition(":")[2] if isinstance(stage, str) else stage.__name__
    try:
        if isinstance(stage, str):
            module, _, function = stage.partition(":")
            stage = getattr(importlib.import_module(module), function)
        result = stage(load_config(params))
    except errors as exc:
        print(f"error in stage {name}: {one_line(exc)}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        what = RESUMES.get(name, "rerun to start it again")
        print(f"interrupted; stage {name}: {what}", file=sys.stderr)
        raise SystemExit(130) from None
    if "torch.distributed" in sys.modules:  # imported here, not before: stages start light
        from slam.train.distributed import exit_after_stage

        exit_after_stage()  # under torchrun the rank ends here (see there); one process goes on
    return result
