"""The benchmark command in smoke mode on tiny random models: structure only, never timings."""

from __future__ import annotations

import math

from benchmarks.env import SMOKE, env_from_config
from benchmarks.run import SMOKE_PROBES, run_benchmarks, write_results
from slam.data.cache import build_cache

SECTIONS = {"cache_vs_instep", "mfu", "whisper_true_length", "padding", "decode_rtf", "memory", "threads",
            "profile", "ctc_classes", "ctc_warmup"}


def test_benchmarks_smoke(tiny_cfg, tmp_path):
    tiny_cfg.runtime.precision = "bf16"  # the default recipe's autocast
    tiny_cfg.train.ctc_weight = 1.0
    tiny_cfg.runtime.threads = 2  # the threads probe compares against one thread
    tiny_cfg.decode.max_new_tokens = tiny_cfg.baseline.max_new_tokens = 8  # random models never stop
    build_cache(tiny_cfg)
    env = env_from_config(tiny_cfg, "tiny", SMOKE, tmp_path / "work", ["tiny random models (test)"])
    # probes side by side: separate processes keep their memory apart; timings mean nothing here
    results = run_benchmarks(env, isolate=False, probes=SMOKE_PROBES, parallel_probes=True,
                             log=lambda _: None)

    assert results["errors"] == {}
    assert set(results["benchmarks"]) == SECTIONS
    for name, section in results["benchmarks"].items():
        assert section["ratios"], name
        for key, value in section["ratios"].items():
            # every headline figure is a ratio of two measurements: positive and finite
            assert isinstance(value, float) and math.isfinite(value) and value > 0, (name, key, value)
    assert len(results["benchmarks"]["profile"]["raw"]["top_ops"]) == 10
    assert set(results["benchmarks"]["memory"]["raw"]) == {"train_cached", "decode_greedy"}
    assert "default_policy_over_one_thread" in results["benchmarks"]["threads"]["ratios"]
    # the model has a CTC head: joint CTC/LLM decoding is timed against the LLM alone
    decode_ratios = results["benchmarks"]["decode_rtf"]["ratios"]
    assert {"joint_greedy_over_greedy", "joint_beam4_over_greedy"} <= set(decode_ratios)
    assert results["machine"]["torch_threads"] >= 1 and results["machine"]["cores"] >= 1

    json_path, md_path = write_results(results, tmp_path / "out")
    text = md_path.read_text()
    assert json_path.exists() and "| measurement | compared | raw figures | ratio |" in text
    assert results["machine"]["cpu"] in text and "tiny random models (test)" in text
    assert "joint CTC/LLM" in text


def test_merge_keeps_other_sections_and_says_when_each_was_measured(tmp_path):
    import json

    from benchmarks.run import merge_results

    old = {"created": "day 1", "load_average": {"start": [1.0]}, "errors": {}, "notes": ["a"],
           "benchmarks": {"padding": {"ratios": {"x": 1.0}}, "hot_paths_old": {"ratios": {"y": 2.0}}}}
    new = {"created": "day 2", "load_average": {"start": [0.5]}, "errors": {}, "notes": ["a", "b"],
           "benchmarks": {"hot_paths_old": {"ratios": {"y": 3.0}}}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(old))
    merged = merge_results(path, new)
    assert merged["benchmarks"]["padding"]["ratios"]["x"] == 1.0
    assert merged["benchmarks"]["hot_paths_old"]["ratios"]["y"] == 3.0
    assert merged["measured"]["padding"]["created"] == "day 1"
    assert merged["measured"]["hot_paths_old"]["created"] == "day 2"
    assert merged["notes"] == ["a", "b"]
    assert merge_results(tmp_path / "absent.json", new) is new
