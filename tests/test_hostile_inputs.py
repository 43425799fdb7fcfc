"""What a hostile but fair user can throw at slam (issue 23): out-of-range settings, a handed-over
model directory that would run code, an export onto a folder that is not ours, audio folders
with odd suffixes or no audio, hypothesis files with rows missing. One test per case; each
outcome is a clear error naming what is wrong, or a correct result."""

from __future__ import annotations

import dataclasses
import math
import re
import typing
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from slam.compose import compose_params
from slam.config import RANGES, RECIPES, ConfigError, Range, SlamConfig, to_config

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- config ranges


@pytest.fixture(scope="module")
def composed() -> dict:
    """The committed params, composed as ``python -m slam.compose`` does."""
    return yaml.safe_load(compose_params(config_dir=REPO / "params"))


def _numeric_settings() -> list[tuple[str, type, bool, Range | None]]:
    """(dotted key, int or float, whether a list of them, range) of every numeric setting."""
    found = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            kind = hints[f.name]
            if dataclasses.is_dataclass(kind):
                walk(kind, f"{prefix}{f.name}.")
                continue
            is_list = typing.get_origin(kind) is list
            kind = typing.get_args(kind)[0] if is_list else kind
            if kind in (int, float):
                found.append((f"{prefix}{f.name}", kind, is_list, RANGES.get(cls, {}).get(f.name)))

    walk(SlamConfig, "")
    return found


def _outside(valid: Range, kind: type) -> st.SearchStrategy:
    """Values of ``kind`` that ``valid`` refuses."""
    options = []
    if valid.low is not None:
        if kind is int:  # up to the largest int below the range
            options.append(st.integers(max_value=math.floor(valid.low) if valid.low_open
                                       else math.ceil(valid.low) - 1))
        else:
            options.append(st.floats(max_value=valid.low, exclude_max=not valid.low_open, allow_nan=False))
    if valid.high is not None:
        if kind is int:
            options.append(st.integers(min_value=math.ceil(valid.high) if valid.high_open
                                       else math.floor(valid.high) + 1))
        else:
            options.append(st.floats(min_value=valid.high, exclude_min=not valid.high_open, allow_nan=False))
    if kind is float:  # never a valid setting
        options.append(st.sampled_from([math.nan, math.inf, -math.inf]))
    return st.one_of(options).filter(lambda v: v not in valid.special)


NUMERIC = [setting for setting in _numeric_settings() if setting[3] is not None]


def test_every_numeric_setting_has_a_range() -> None:
    assert [key for key, *_, valid in _numeric_settings() if valid is None] == []
    for cls, ranges in RANGES.items():  # and no range names a setting that is gone
        assert set(ranges) <= {f.name for f in dataclasses.fields(cls)}, cls.__name__


@settings(max_examples=80, deadline=None)
@given(case=st.sampled_from(NUMERIC).flatmap(lambda s: st.tuples(st.just(s), _outside(s[3], s[1]))))
def test_generated_out_of_range_values_name_key_value_and_range(composed, case) -> None:
    (key, _, is_list, valid), value = case
    raw = yaml.safe_load(yaml.safe_dump(composed))  # a fresh copy
    section, name = key.rsplit(".", 1)
    # in a list, after a valid entry when there is one
    raw.setdefault(section, {})[name] = [*(raw[section].get(name) or [])[:1], value] if is_list else value
    with pytest.raises(ConfigError) as info:
        to_config(raw)
    message = str(info.value)
    assert message.startswith(f"bad config: {key}: ") and "out of range" in message, message
    assert f"(must be {valid})" in message and "\n" not in message


@pytest.mark.parametrize(
    "override, named",
    [
        ("train.lr=-0.001", "train.lr: -0.001 is out of range (must be > 0)"),
        ("train.lora_lr=0", "train.lora_lr: 0.0 is out of range (must be > 0)"),
        ("train.grad_accum=0", "train.grad_accum: 0 is out of range (must be >= 1)"),
        ("train.max_steps=0", "train.max_steps: 0 is out of range (must be >= 1)"),
        ("train.max_duration=0", "train.max_duration: 0.0 is out of range (must be > 0)"),
        ("train.eval_every=0", "train.eval_every: 0 is out of range (must be >= 1)"),
        ("train.ctc_warmup_steps=-1", "train.ctc_warmup_steps: -1 is out of range (must be >= 0)"),
        ("decode.batch_size=0", "decode.batch_size: 0 is out of range (must be >= 1)"),
        ("decode.num_beams=[1,0]", "decode.num_beams: 0 is out of range (must be >= 1)"),
        ("decode.ctc_weight=1.5", "decode.ctc_weight: 1.5 is out of range (must be [0, 1])"),
        ("corpus.dev_fraction=2", "corpus.dev_fraction: 2.0 is out of range (must be [0, 1])"),
        ("caption.lr=-1", "caption.lr: -1.0 is out of range (must be > 0)"),
        ("bias.ctc_lr=0", "bias.ctc_lr: 0.0 is out of range (must be > 0)"),
    ],
)
def test_compose_refuses_an_out_of_range_override(override: str, named: str) -> None:
    """``dvc exp run -S <override>`` composes through here: it fails before any stage runs."""
    with pytest.raises(ConfigError, match="^bad config: " + re.escape(named)):
        compose_params([override], config_dir=REPO / "params")


def test_unknown_recipe_lists_the_known_ones(composed) -> None:
    from slam.biasing import BIAS_RECIPE
    from slam.captioning import CAPTION_RECIPE
    from slam.translation import TRANSLATION_RECIPE

    # the names the stages switch on are exactly the known ones (asr: none of them)
    assert set(RECIPES) == {"asr", BIAS_RECIPE, CAPTION_RECIPE, TRANSLATION_RECIPE}
    with pytest.raises(ConfigError) as info:
        to_config({**composed, "recipe": "asrbias"})
    assert str(info.value) == ("bad config: recipe: unknown recipe 'asrbias' "
                               "(known recipes: aac, asr, asr_bias, st)")
    for profile in sorted((REPO / "params" / "profile").glob("*.yaml")):  # every profile stays valid
        assert to_config(yaml.safe_load(compose_params([f"profile={profile.stem}"], REPO / "params")))
