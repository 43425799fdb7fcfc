"""Import a Hugging Face model (hub id or local folder) by re-saving it as safetensors.

For users who do have a hub (or a folder from one): the zoo then holds every model in the
same form, whatever its origin. Remote code is never run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from slam.config import ZooModelConfig
from slam.zoo import IMPORTERS
from slam.zoo.sources import Source

log = logging.getLogger(__name__)


def _model_class(config: Any) -> tuple[Any, str]:
    """Pick the auto class from the config: Whisper, a causal LM, else the bare model."""
    from transformers import AutoModel, AutoModelForCausalLM, WhisperForConditionalGeneration
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.model_type == "whisper":
        return WhisperForConditionalGeneration, "whisper"
    # the saved architectures decide: a BERT sentence encoder ("BertModel") has a model_type
    # that also maps to a causal LM class, whose head would be newly initialised
    architectures = getattr(config, "architectures", None) or []
    causal = (any(a.endswith("ForCausalLM") for a in architectures) if architectures
              else config.model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)
    return (AutoModelForCausalLM, "causal_lm") if causal else (AutoModel, config.model_type)


def _save_preprocessors(location: str, out_dir: Path, kind: str) -> list[str]:
    """Save whatever processor, tokenizer or feature extractor the source has."""
    from transformers import AutoFeatureExtractor, AutoProcessor, AutoTokenizer, WhisperProcessor

    loaders: list[tuple[str, Any]]
    if kind == "whisper":
        loaders = [("processor", WhisperProcessor)]
    elif kind == "causal_lm":
        loaders = [("tokenizer", AutoTokenizer)]
    else:
        loaders = [
            ("processor", AutoProcessor),
            ("tokenizer", AutoTokenizer),
            ("feature_extractor", AutoFeatureExtractor),
        ]
    saved = []
    for what, cls in loaders:
        try:
            obj = cls.from_pretrained(location, trust_remote_code=False)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            if kind in ("whisper", "causal_lm"):
                raise RuntimeError(f"cannot load the {what} of {location}: {exc}") from exc
            log.debug("no %s in %s: %s", what, location, exc)
            continue
        obj.save_pretrained(out_dir)
        saved.append(what)
        if what == "processor":
            break  # a processor already holds the tokenizer and feature extractor
    return saved


@IMPORTERS.register("hf")
def import_hf(
    entry: ZooModelConfig, source: Source, out_dir: Path, *, dtype: str = "float32"
) -> dict[str, Any]:
    """``from_pretrained`` (hub id, local folder, or ``entry.file`` inside the source) → safetensors."""
    import torch
    from transformers import AutoConfig

    if source.hub_id is not None:
        location = source.hub_id
    else:
        location = str(source.file(entry.file) if entry.file else source.root)
    config = AutoConfig.from_pretrained(location, trust_remote_code=False)
    cls, kind = _model_class(config)
    log.info("loading %s as %s", location, cls.__name__)
    model = cls.from_pretrained(location, dtype=getattr(torch, dtype), trust_remote_code=False).eval()
    model.save_pretrained(out_dir)
    saved = _save_preprocessors(location, out_dir, kind)
    return {
        "kind": kind,
        "architecture": type(model).__name__,
        "params": sum(p.numel() for p in model.parameters()),
        "dtype": dtype,
        "preprocessors": saved,
    }
