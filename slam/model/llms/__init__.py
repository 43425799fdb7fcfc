"""LLM backbones, registered in ``LLMS`` by config name."""

from __future__ import annotations

from slam.model.llms.causal_lm import LLMS, LoadedLLM, build_llm

__all__ = ["LLMS", "LoadedLLM", "build_llm"]
