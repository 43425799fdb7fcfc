"""Import a CTranslate2 Whisper model (``model.bin`` + ``config.json`` + ``tokenizer.json``).

The registry packages ship Whisper in CTranslate2's format only. ``model.bin`` is parsed with
numpy (no ctranslate2 dependency), its variables are renamed to transformers'
``WhisperForConditionalGeneration`` layout (splitting CTranslate2's fused projections), and
the result is written as a Hugging Face folder: safetensors weights, config, generation
config, feature extractor and tokenizer, so ``WhisperProcessor.from_pretrained`` and
``model.generate`` work offline.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slam.config import ZooModelConfig
from slam.zoo import IMPORTERS
from slam.zoo.sources import Source

log = logging.getLogger(__name__)

# CTranslate2's DataType enum as written in model.bin
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_CT2_BF16 = 5
_CT2_GELU = 3  # ctranslate2::ops::ActivationType::GELU
# OpenAI's rule (also CTranslate2's): English-only checkpoints have one token fewer
_MULTILINGUAL_MIN_VOCAB = 51865
_NUM_TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|> in 0.02 s steps


class Ct2FormatError(ValueError):
    """``model.bin`` is not a CTranslate2 Whisper model this importer understands."""


@dataclass
class Ct2Model:
    """The content of a CTranslate2 ``model.bin``: spec name, revision and named arrays."""

    version: int
    spec: str
    revision: int
    variables: dict[str, np.ndarray]


def read_ct2_model(path: str | Path) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (format version 5+) into numpy arrays.

    Quantised weights (``<name>`` int8/int16 with ``<name>_scale``) are dequantised to
    float32 and aliases (e.g. the decoder projection tied to the embeddings) are resolved.
    """
    # memory-mapped: arrays are views into the file until they are converted
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    pos = 0

    def unpack(fmt: str) -> Any:
        nonlocal pos
        value = struct.unpack_from("<" + fmt, buf, pos)[0]
        pos += struct.calcsize("<" + fmt)
        return value

    def string() -> str:
        nonlocal pos
        size = unpack("H")  # the length counts a trailing NUL
        text = buf[pos : pos + size].tobytes().rstrip(b"\0").decode("utf-8")
        pos += size
        return text

    version = unpack("I")
    if version < 5:
        raise Ct2FormatError(f"{path}: CTranslate2 model format version {version} is too old (need 5+)")
    spec = string()
    revision = unpack("I")
    variables: dict[str, np.ndarray] = {}
    for _ in range(unpack("I")):
        name = string()
        shape = tuple(unpack("I") for _ in range(unpack("B")))
        dtype_id = unpack("B")
        nbytes = unpack("I")
        raw = buf[pos : pos + nbytes]
        pos += nbytes
        if dtype_id == _CT2_BF16:  # numpy has no bfloat16: widen the 16 bits into float32's top half
            bits = raw.view("<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        elif dtype_id in _CT2_DTYPES:
            array = raw.view(np.dtype(_CT2_DTYPES[dtype_id]).newbyteorder("<"))
        else:
            raise Ct2FormatError(f"{path}: variable {name} has unknown dtype id {dtype_id}")
        variables[name] = array.reshape(shape)
    for _ in range(unpack("I")):
        alias, target = string(), string()
        variables[alias] = variables[target]
    if pos != len(buf):
        raise Ct2FormatError(
            f"{path}: {len(buf) - pos} trailing bytes after the variables (truncated or not CT2?)"
        )
    return Ct2Model(version, spec, revision, _dequantize(variables))


def _dequantize(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name, value in variables.items():
        if name.endswith("_scale") and name[: -len("_scale")] in variables:
            continue
        scale = variables.get(name + "_scale")
        if scale is not None and value.dtype in (np.int8, np.int16):
            # CTranslate2 stores round(w * scale) with one scale per output row
            value = value.astype(np.float32) / scale.astype(np.float32).reshape(-1, *([1] * (value.ndim - 1)))
        out[name] = value
    return out


def _scalar(variables: dict[str, np.ndarray], name: str, default: int | None = None) -> int:
    if name not in variables:
        if default is None:
            raise Ct2FormatError(f"model.bin has no {name}")
        return default
    return int(np.asarray(variables[name]).reshape(-1)[0])


def _count_layers(variables: dict[str, np.ndarray], prefix: str) -> int:
    n = 0
    while any(k.startswith(f"{prefix}/layer_{n}/") for k in variables):
        n += 1
    return n


def ct2_whisper_state_dict(variables: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Rename CTranslate2 Whisper variables to transformers' names.

    Returns the state dict (float32 arrays) and the dimensions read off the shapes. Fails
    on a variable it does not know, so that a different spec cannot be half-converted.
    """
    v = {k: a for k, a in variables.items() if a.ndim > 0}
    used: set[str] = set()

    def take(name: str) -> np.ndarray:
        if name not in v:
            raise Ct2FormatError(f"model.bin has no {name}")
        used.add(name)
        return np.array(v[name], dtype=np.float32)  # a writable copy: the file buffer is read-only

    sd: dict[str, np.ndarray] = {}

    def norm(ct2: str, hf: str) -> None:
        sd[f"{hf}.weight"], sd[f"{hf}.bias"] = take(f"{ct2}/gamma"), take(f"{ct2}/beta")

    def linear(ct2: str, hf: str) -> None:
        sd[f"{hf}.weight"], sd[f"{hf}.bias"] = take(f"{ct2}/weight"), take(f"{ct2}/bias")

    def split_linear(ct2: str, hfs: list[str]) -> None:
        # CTranslate2 fuses q/k/v (or k/v) into one matrix; transformers' k_proj has no
        # bias: the converter wrote zeros there, and a key bias cannot change attention
        # anyway (it adds the same q·b to every key's score before the softmax)
        weights = np.split(take(f"{ct2}/weight"), len(hfs))
        biases = np.split(take(f"{ct2}/bias"), len(hfs))
        for hf, w, b in zip(hfs, weights, biases, strict=True):
            sd[f"{hf}.weight"] = w
            if not hf.endswith("k_proj"):
                sd[f"{hf}.bias"] = b

    enc, dec = "model.encoder", "model.decoder"
    for i in (1, 2):
        linear(f"encoder/conv{i}", f"{enc}.conv{i}")
    sd[f"{enc}.embed_positions.weight"] = take("encoder/position_encodings/encodings")
    n_enc = _count_layers(v, "encoder")
    for i in range(n_enc):
        c, h = f"encoder/layer_{i}", f"{enc}.layers.{i}"
        norm(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        split_linear(f"{c}/self_attention/linear_0", [f"{h}.self_attn.{p}_proj" for p in "qkv"])
        linear(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj")
        norm(f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")
        linear(f"{c}/ffn/linear_0", f"{h}.fc1")
        linear(f"{c}/ffn/linear_1", f"{h}.fc2")
    norm("encoder/layer_norm", f"{enc}.layer_norm")

    sd[f"{dec}.embed_tokens.weight"] = take("decoder/embeddings/weight")
    sd[f"{dec}.embed_positions.weight"] = take("decoder/position_encodings/encodings")
    n_dec = _count_layers(v, "decoder")
    for i in range(n_dec):
        c, h = f"decoder/layer_{i}", f"{dec}.layers.{i}"
        norm(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        split_linear(f"{c}/self_attention/linear_0", [f"{h}.self_attn.{p}_proj" for p in "qkv"])
        linear(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj")
        norm(f"{c}/attention/layer_norm", f"{h}.encoder_attn_layer_norm")
        linear(f"{c}/attention/linear_0", f"{h}.encoder_attn.q_proj")
        split_linear(f"{c}/attention/linear_1", [f"{h}.encoder_attn.{p}_proj" for p in "kv"])
        linear(f"{c}/attention/linear_2", f"{h}.encoder_attn.out_proj")
        norm(f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")
        linear(f"{c}/ffn/linear_0", f"{h}.fc1")
        linear(f"{c}/ffn/linear_1", f"{h}.fc2")
    norm("decoder/layer_norm", f"{dec}.layer_norm")

    # transformers ties proj_out to the token embeddings; CTranslate2 stores an alias
    embed = sd[f"{dec}.embed_tokens.weight"]
    proj = v.get("decoder/projection/weight")
    if proj is not None:
        used.add("decoder/projection/weight")
        if proj.shape != embed.shape or not np.array_equal(proj.astype(np.float32), embed):
            raise Ct2FormatError(
                "decoder/projection/weight differs from the embeddings (untied output layer)"
            )
    sd["proj_out.weight"] = embed

    leftover = sorted(set(v) - used)
    if leftover:
        raise Ct2FormatError(f"model.bin has variables this importer does not map: {leftover}")

    d_model = sd[f"{enc}.conv1.weight"].shape[0]
    dims = {
        "d_model": d_model,
        "num_mel_bins": sd[f"{enc}.conv1.weight"].shape[1],
        "vocab_size": embed.shape[0],
        "encoder_layers": n_enc,
        "decoder_layers": n_dec,
        "encoder_attention_heads": _scalar(variables, "encoder/num_heads"),
        "decoder_attention_heads": _scalar(variables, "decoder/num_heads"),
        "encoder_ffn_dim": sd[f"{enc}.layers.0.fc1.weight"].shape[0] if n_enc else 4 * d_model,
        "decoder_ffn_dim": sd[f"{dec}.layers.0.fc1.weight"].shape[0] if n_dec else 4 * d_model,
        "max_source_positions": sd[f"{enc}.embed_positions.weight"].shape[0],
        "max_target_positions": sd[f"{dec}.embed_positions.weight"].shape[0],
    }
    return sd, dims


def _check_whisper_flags(model: Ct2Model) -> None:
    """Refuse CTranslate2 models whose decoder options Whisper does not use."""
    if model.spec != "WhisperSpec":
        raise Ct2FormatError(f"model.bin holds a {model.spec}, not a WhisperSpec")
    v = model.variables
    expected = {
        "decoder/activation": _CT2_GELU,
        "decoder/pre_norm": 1,
        "decoder/scale_embeddings": 0,
        "decoder/start_from_zero_embedding": 0,
        "decoder/alibi": 0,
    }
    for name, want in expected.items():
        if name in v and _scalar(v, name) != want:
            raise Ct2FormatError(f"{name} = {_scalar(v, name)}, Whisper needs {want}")


def _special_ids(tokenizer_json: dict[str, Any]) -> dict[str, int]:
    ids = {t["content"]: t["id"] for t in tokenizer_json.get("added_tokens", [])}
    need = ["<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>"]
    missing = [t for t in need if t not in ids]
    if missing:
        raise Ct2FormatError(f"tokenizer.json lacks the Whisper special tokens {missing}")
    return ids


def build_whisper_tokenizer(tokenizer_file: Path, vocab_size: int) -> Any:
    """A transformers Whisper tokenizer from CTranslate2's ``tokenizer.json``.

    The file lacks the 1501 timestamp tokens that fill the model's vocabulary; they are
    added (as in the Hugging Face checkpoints) so that ids and vocabulary agree.
    """
    from tokenizers import AddedToken
    from transformers import WhisperTokenizerFast  # the tokenizers-backed class

    added = json.loads(tokenizer_file.read_text(encoding="utf-8")).get("added_tokens", [])
    specials = [t["content"] for t in sorted(added, key=lambda t: t["id"]) if t.get("special")]
    # listed in id order: the tokenizer takes the id after the last special token
    # (<|notimestamps|>) as the first timestamp when decoding with timestamps
    tok = WhisperTokenizerFast(
        tokenizer_file=str(tokenizer_file), pad_token="<|endoftext|>", extra_special_tokens=specials
    )
    missing = vocab_size - len(tok)
    if missing == _NUM_TIMESTAMPS:
        tok.add_tokens(
            [
                AddedToken(f"<|{i * 0.02:.2f}|>", special=False, normalized=False)
                for i in range(_NUM_TIMESTAMPS)
            ]
        )
    elif missing != 0:
        log.warning(
            "tokenizer has %d tokens, the model %d: not adding timestamp tokens", len(tok), vocab_size
        )
    return tok


def whisper_generation_config(
    ct2_config: dict[str, Any], ids: dict[str, int], vocab_size: int, max_length: int, multilingual: bool
) -> Any:
    """Whisper's generation settings from CTranslate2's ``config.json`` and the tokenizer ids.

    ``generate`` reads the prompt tokens from here: the start token, ``<|notimestamps|>``
    and, for multilingual models, the language and task tokens.
    """
    from transformers import GenerationConfig

    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    kwargs: dict[str, Any] = {
        "decoder_start_token_id": sot,
        "bos_token_id": eot,
        "eos_token_id": eot,
        "pad_token_id": eot,
        "max_length": max_length,
        "no_timestamps_token_id": ids["<|notimestamps|>"],
        "return_timestamps": False,
        "max_initial_timestamp_index": 50,
        "is_multilingual": multilingual,
        "suppress_tokens": [int(t) for t in ct2_config.get("suppress_ids", [])],
        "begin_suppress_tokens": [int(t) for t in ct2_config.get("suppress_ids_begin", [220, eot])],
    }
    if "<|startofprev|>" in ids:
        kwargs["prev_sot_token_id"] = ids["<|startofprev|>"]
    if ct2_config.get("alignment_heads"):
        kwargs["alignment_heads"] = [[int(a), int(b)] for a, b in ct2_config["alignment_heads"]]
    if multilingual:
        by_id = {i: t for t, i in ids.items()}
        lang_ids = ct2_config.get("lang_ids") or []
        lang_to_id = {by_id[i]: int(i) for i in lang_ids if i in by_id}
        if not lang_to_id:
            raise Ct2FormatError("multilingual model without language tokens (config.json lang_ids)")
        kwargs["lang_to_id"] = lang_to_id
        kwargs["task_to_id"] = {t: ids[f"<|{t}|>"] for t in ("transcribe", "translate") if f"<|{t}|>" in ids}
        # the default task: without it a detected language is followed by no task token
        kwargs["task"] = "transcribe"
    gen = GenerationConfig(**kwargs)
    bad = [t for t in gen.suppress_tokens + gen.begin_suppress_tokens if not 0 <= t < vocab_size]
    if bad:
        raise Ct2FormatError(f"suppress ids outside the vocabulary: {bad}")
    return gen


@IMPORTERS.register("whisper_ct2")
def import_whisper_ct2(
    entry: ZooModelConfig,
    source: Source,
    out_dir: Path,
    *,
    dtype: str = "float32",
    multilingual: bool | None = None,
) -> dict[str, Any]:
    """Convert a CTranslate2 Whisper (``entry.file``, default ``model.bin``) into ``out_dir``.

    ``config.json`` and ``tokenizer.json`` are read from the same folder. ``multilingual``
    overrides the vocabulary-size rule (for small test models).
    """
    import torch
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    model_bin = source.file(entry.file or "model.bin")
    folder = model_bin.parent
    log.info("reading %s (%.1f MB)", model_bin, model_bin.stat().st_size / 1e6)
    ct2 = read_ct2_model(model_bin)
    _check_whisper_flags(ct2)
    ct2_config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else {}
    tokenizer_file = folder / "tokenizer.json"
    if not tokenizer_file.exists():
        raise Ct2FormatError(f"no tokenizer.json beside {model_bin}")
    ids = _special_ids(json.loads(tokenizer_file.read_text(encoding="utf-8")))

    state, dims = ct2_whisper_state_dict(ct2.variables)
    # transformers' Whisper and its feature extractor assume 30 s windows of 10 ms frames
    if dims["num_mel_bins"] not in (80, 128):
        raise Ct2FormatError(f"{dims['num_mel_bins']} mel bins; Whisper uses 80 (or 128 for large-v3)")
    if dims["max_source_positions"] != 1500 or dims["max_target_positions"] != 448:
        raise Ct2FormatError(
            f"positions {dims['max_source_positions']}/{dims['max_target_positions']}, "
            "Whisper has 1500 (encoder) / 448 (decoder)"
        )
    if multilingual is None:
        multilingual = dims["vocab_size"] >= _MULTILINGUAL_MIN_VOCAB
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    gen = whisper_generation_config(
        ct2_config, ids, dims["vocab_size"], dims["max_target_positions"], multilingual
    )
    config = WhisperConfig(
        **dims,
        activation_function="gelu",
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=gen.suppress_tokens,
        begin_suppress_tokens=gen.begin_suppress_tokens,
        tie_word_embeddings=True,
    )
    with torch.device("meta"):  # no random init: every weight is assigned next
        model = WhisperForConditionalGeneration(config)
    tensors = {k: torch.from_numpy(a) for k, a in state.items()}
    result = model.load_state_dict(tensors, strict=False, assign=True)
    if result.missing_keys or result.unexpected_keys:
        raise Ct2FormatError(
            f"state dict mismatch: missing {result.missing_keys}, unexpected {result.unexpected_keys}"
        )
    model.tie_weights()
    meta = [n for n, t in model.state_dict().items() if t.is_meta]
    if meta:
        raise Ct2FormatError(f"weights not set from model.bin: {meta}")
    model.generation_config = gen
    model = model.to(getattr(torch, dtype)).eval()
    model.save_pretrained(out_dir)

    tokenizer = build_whisper_tokenizer(tokenizer_file, dims["vocab_size"])
    features = WhisperFeatureExtractor(feature_size=dims["num_mel_bins"])
    WhisperProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(out_dir)
    return {
        "kind": "whisper",
        "params": sum(p.numel() for p in model.parameters()),
        "multilingual": multilingual,
        "dtype": dtype,
        "ct2": {"version": ct2.version, "spec": ct2.spec, "revision": ct2.revision},
        **dims,
    }
