"""Import a GGUF language model (llama.cpp's format) as a plain transformers folder.

transformers reads GGUF itself (``from_pretrained(dir, gguf_file=...)``, dequantising to
float) for the architectures it maps (Llama, Qwen2, Gemma3, ...), but refuses to
``save_pretrained`` a GGUF-loaded model. So the loaded weights are copied into a fresh
model built from the same config without its ``quantization_config`` and saved as
safetensors, together with the tokenizer (chat template included) from the same file.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from slam.config import ZooModelConfig
from slam.zoo import IMPORTERS
from slam.zoo.sources import Source

log = logging.getLogger(__name__)


class GGUFImportError(RuntimeError):
    """The GGUF file cannot be turned into a transformers causal LM."""


def _single_gguf(source: Source, name: str) -> Path:
    if name:
        return source.file(name)
    assert source.root is not None
    found = sorted(source.root.rglob("*.gguf"))
    if len(found) != 1:
        raise GGUFImportError(
            f"set 'file': {len(found)} .gguf files in {source.specs}: {[p.name for p in found]}"
        )
    return found[0]


@IMPORTERS.register("gguf_llm")
def import_gguf_llm(
    entry: ZooModelConfig, source: Source, out_dir: Path, *, dtype: str = "float32"
) -> dict[str, Any]:
    """Dequantise ``entry.file`` (a GGUF; the only ``*.gguf`` if empty) into ``out_dir``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = _single_gguf(source, entry.file)
    folder, name = str(gguf_path.parent), gguf_path.name
    torch_dtype = getattr(torch, dtype)
    log.info("loading %s (%.1f MB, dequantising)", gguf_path, gguf_path.stat().st_size / 1e6)
    start = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch_dtype)
    except ValueError as exc:  # e.g. "GGUF model with architecture X is not supported yet"
        raise GGUFImportError(f"transformers cannot load {gguf_path}: {exc}") from exc
    log.info("dequantised in %.1f s", time.perf_counter() - start)

    config = loaded.config
    # the GGUF quantiser attached here is what blocks save_pretrained
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    with torch.device("meta"):  # no random init: every weight is overwritten next
        model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype)
    state = loaded.state_dict()
    result = model.load_state_dict(state, strict=False, assign=True)
    tied = set(getattr(model, "_tied_weights_keys", None) or {})
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise GGUFImportError(f"state dict mismatch: missing {missing}, unexpected {result.unexpected_keys}")
    model.tie_weights()
    # only what save_pretrained writes must be real; non-persistent buffers (rotary
    # frequencies) stay on meta, as the saved folder is reloaded, not this object
    meta = [n for n, t in model.state_dict().items() if t.is_meta]
    if meta:
        raise GGUFImportError(f"weights not set by the GGUF file: {meta}")
    model.generation_config = loaded.generation_config
    model.eval()
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    del loaded
    return {
        "kind": "causal_lm",
        "architecture": type(model).__name__,
        "params": sum(p.numel() for p in model.parameters()),
        "dtype": dtype,
        "vocab_size": int(config.vocab_size),
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
    }
