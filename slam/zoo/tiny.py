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


@IMPORTERS.register("tiny_qwen2")
def import_tiny_qwen2(entry: ZooModelConfig, source: Any, out_dir: Path, **_: Any) -> dict[str, Any]:
    """Shaped like the packaged Qwen2.5-Coder-Instruct: a chat model."""
    from slam.testing import save_tiny_causal_lm

    save_tiny_causal_lm(out_dir, "qwen2")
    return {"kind": "causal_lm", "architecture": "Qwen2ForCausalLM", "random": True}


@IMPORTERS.register("tiny_gemma3")
def import_tiny_gemma3(entry: ZooModelConfig, source: Any, out_dir: Path, **_: Any) -> dict[str, Any]:
    """Shaped like the packaged Gemma-3-270M: a base model for a plain prompt."""
    from slam.testing import save_tiny_causal_lm

    save_tiny_causal_lm(out_dir, "gemma3")
    return {"kind": "causal_lm", "architecture": "Gemma3ForCausalLM", "random": True}
