"""Converted checkpoints: a directory of ``config.json`` + ``model.safetensors``.

Some encoders' published checkpoints are torch files made for other modelling code (BEATs,
emotion2vec, EAT). Their modules here reimplement the network and each registers in
:data:`CONVERTERS` a function that turns such a file into a directory ``encoder.path`` names:
``config.json`` (plain hyperparameters) and ``model.safetensors`` (what inference needs), run as

    python -m slam.cli convert FAMILY CHECKPOINT OUT_DIR [--allow-pickle] [--config YAML]

A converter returns a :class:`ConversionReport` of what it left out or renamed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from slam.registry import Registry
from slam.utils import atomic_dir

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


@dataclass
class ConversionReport:
    """What a conversion changed besides copying tensors."""

    dropped: dict[str, str] = field(default_factory=dict)  # checkpoint key -> why it is left out
    renamed: dict[str, str] = field(default_factory=dict)  # checkpoint key -> the module's
    notes: list[str] = field(default_factory=list)  # anything else worth saying

    def lines(self) -> list[str]:
        """Dropped keys grouped by reason (a count and up to 3 examples), renames, notes."""
        reasons: dict[str, list[str]] = {}
        for key, why in self.dropped.items():
            reasons.setdefault(why, []).append(key)
        out = []
        for why, keys in sorted(reasons.items()):
            examples = ", ".join(sorted(keys)[:3]) + (", ..." if len(keys) > 3 else "")
            out.append(f"dropped {why} ({len(keys)} key{'s' if len(keys) > 1 else ''}): {examples}")
        out += [f"renamed {old} -> {new}" for old, new in self.renamed.items()]
        return out + self.notes


# family -> its converter ``(src: Path, dst: Path, *, allow_pickle: bool, config_yaml: Path | None)
# -> ConversionReport``; each encoder module registers its own
CONVERTERS: Registry[ConversionReport] = Registry("checkpoint converter")


def convert_command(family: str) -> str:
    return f"python -m slam.cli convert {family} CHECKPOINT OUT_DIR"


def write_converted(
    dst: str | Path, config: Mapping[str, Any], state: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> None:
    """Write ``dst/config.json`` and ``dst/model.safetensors``; ``dst`` is replaced whole once
    both are complete, and only if it is new or an earlier conversion (ValueError otherwise)."""
    dst = Path(dst)
    if dst.exists() and (not dst.is_dir() or {p.name for p in dst.iterdir()} - {CONFIG_FILE, WEIGHTS_FILE}):
        raise ValueError(f"{dst} exists and holds more than a converted model: refusing to replace it, "
                         "choose a new directory")
    with atomic_dir(dst) as tmp:
        # contiguous copies: safetensors refuses tensors that share storage
        tensors = {k: v.detach().contiguous().clone() for k, v in state.items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt", **metadata})
        (tmp / CONFIG_FILE).write_text(json.dumps(dict(config), indent=2, sort_keys=True) + "\n")


def check_state(
    expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], source: str
) -> None:
    """Raise a ValueError naming every missing, unexpected or misshapen key of ``state`` against
    ``expected`` (the state dict of the model its config describes)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshapen = sorted(
        f"{k} {tuple(state[k].shape)} (expected {tuple(expected[k].shape)})"
        for k in set(state) & set(expected)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    problems = [
        f"{what}: {', '.join(keys)}"
        for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen))
        if keys
    ]
    if problems:
        raise ValueError(f"{source} does not fit the model its config describes; " + "; ".join(problems))


def read_converted(path: str | Path, family: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The config and tensors of a converted directory (``encoder.path`` of ``family``)."""
    directory = Path(path)
    if directory.suffix in (".pt", ".pth", ".ckpt") or directory.is_file():
        raise ValueError(
            f"encoder.path={path} is a checkpoint file, not a converted {family} directory: convert it "
            f"once with `{convert_command(family)}` and set encoder.path to OUT_DIR"
        )
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"encoder.path={path} has no {' or '.join(missing)}: it must be a converted {family} "
            f"directory (`{convert_command(family)}`)"
        )
    return json.loads((directory / CONFIG_FILE).read_text()), load_file(str(directory / WEIGHTS_FILE))
