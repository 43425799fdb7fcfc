"""Importers that build tiny random models from configs (no source): the micro profile and
tests run the whole pipeline on them in minutes, through the same loading code as real ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slam.config import ZooModelConfig
from slam.zoo import IMPORTERS


@IMPORTERS.register("tiny_whisper")
def import_tiny_whisper(entry: ZooModelConfig, source: Any, out_dir: Path, **_: Any) -> dict[str, Any]:
    from slam.testing import save_tiny_whisper

    save_tiny_whisper(out_dir)
    return {"kind": "whisper", "architecture": "WhisperForConditionalGeneration", "random": True}


@IMPORTERS.register("tiny_llm")
def import_tiny_llm(entry: ZooModelConfig, source: Any, out_dir: Path, **_: Any) -> dict[str, Any]:
    from slam.testing import save_tiny_llm

    save_tiny_llm(out_dir)
    return {"kind": "causal_lm", "architecture": "LlamaForCausalLM", "random": True}
