"""slam: audio-first multimodal LLM experiments (encoder -> projector -> LLM)."""

__version__ = "0.1.0"
