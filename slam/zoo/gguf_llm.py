"""Import a GGUF language model (llama.cpp's format) as a plain transformers folder.

transformers reads GGUF itself (``from_pretrained(dir, gguf_file=...)``, dequantising to
float) for the architectures it maps (Llama, Qwen2, Gemma3, ...), but refuses to
``save_pretrained`` a GGUF-loaded model. So the loaded weights are copied into a fresh
model built from the same config without its ``quantization_config`` and saved as
safetensors, together with the tokenizer (chat template included) from the same file.

The saved folder is then reloaded the way training loads it (``AutoModelForCausalLM``,
``AutoTokenizer``) and must give the same next-token logits on a probe text as the model
read from the GGUF file: this catches what a save can silently lose (tied weights, buffers
that are not saved such as Gemma's embedding scale, config fields, tokenizer settings).

Checked with transformers 5.23 on the packaged models: Llama (SmolLM2), Qwen2
(Qwen2.5-Coder-0.5B-Instruct) and Gemma3 (Gemma-3-270M; transformers subtracts the +1
llama.cpp adds to Gemma's norm weights and rebuilds the 5-local/1-global layer pattern and
both rope bases from the GGUF metadata), so no converter of our own is needed. The import
is as tied as the file: Qwen2.5's GGUF carries ``output.weight`` (Q8_0) beside
``token_embd.weight`` (Q5_0), the same matrix quantised twice, so that model comes out untied
(630M parameters instead of 494M), as llama.cpp runs it.
"""

from __future__ import annotations

import gc
import logging
import time
from pathlib import Path
from typing import Any

from slam.config import ZooModelConfig
from slam.zoo import IMPORTERS
from slam.zoo.sources import Source

log = logging.getLogger(__name__)


# a text every tokenizer splits into several tokens; only the logits' agreement matters here
ROUNDTRIP_PROBE = "The capital of France is"
ROUNDTRIP_TOLERANCE = 1e-4  # of the largest |logit|; the same weights in the same dtype


class GGUFImportError(RuntimeError):
    """The GGUF file cannot be turned into a transformers causal LM."""


def _next_token_logits(model: Any, ids: list[int]) -> Any:
    import torch

    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0, -1].float()


def check_roundtrip(folder: Path, reference_ids: list[int], reference: Any, dtype: Any) -> float:
    """Reload ``folder`` as training does; its probe logits must equal ``reference``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = tokenizer(ROUNDTRIP_PROBE).input_ids
    if ids != reference_ids:
        raise GGUFImportError(
            f"the saved tokenizer splits {ROUNDTRIP_PROBE!r} as {ids}, the GGUF one as {reference_ids}"
        )
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
    diff = float((_next_token_logits(model, ids) - reference).abs().max())
    scale = float(reference.abs().max())
    if not diff <= ROUNDTRIP_TOLERANCE * max(scale, 1.0):  # also fails on NaN
        raise GGUFImportError(
            f"the saved model in {folder} differs from the GGUF one: next-token logits differ by "
            f"{diff:.3g} (largest logit {scale:.3g}); a weight, buffer or config field was lost"
        )
    return diff


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
    probe_ids = tokenizer(ROUNDTRIP_PROBE).input_ids
    reference = _next_token_logits(loaded, probe_ids)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    info = {
        "kind": "causal_lm",
        "architecture": type(model).__name__,
        "params": sum(p.numel() for p in model.parameters()),
        "dtype": dtype,
        "vocab_size": int(config.vocab_size),
        "chat_template": bool(getattr(tokenizer, "chat_template", None)),
        "bos_token": tokenizer.bos_token,
        "eos_token": tokenizer.eos_token,
        "tie_word_embeddings": bool(getattr(config, "tie_word_embeddings", False)),
        "gguf_mb": round(gguf_path.stat().st_size / 1e6, 1),
    }
    del loaded, model, state
    gc.collect()  # the reload below must not hold two copies of the weights
    start = time.perf_counter()
    info["roundtrip_max_diff"] = check_roundtrip(out_dir, probe_ids, reference, torch_dtype)
    log.info("reloaded the saved folder: same logits (%.1f s)", time.perf_counter() - start)
    return info
