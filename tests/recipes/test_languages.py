"""Recipe asr_lang (profile lang, the paper's Table IV): the profile per language, the spoken_<lang>
normalisers and the CER, the normaliser check, one tiny train + decode + baseline (as shipped and
fine-tuned) + score run on a fake prompt set, and the table spec."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest
import yaml

from slam.compose import compose_params
from slam.config import ConfigError, SlamConfig, to_config
from slam.recipes import recipe_of
from slam.recipes.asr_lang import LanguageASR
from slam.score.metrics import normalize, score_wer
from slam.track.tables import build_table, load_specs, render_markdown

REPO = Path(__file__).resolve().parents[2]
LINES = [f"p{i}: {text}" for i, text in enumerate(
    ["Gracias.", "Adiós.", "Marque 1 para ventas.", "Marque 2 para soporte.", "Buzón de voz.",
     "Contraseña incorrecta.", "Mensaje nuevo.", "Mensajes guardados.", "Por favor espere.",
     "Número inválido.", "Conferencia bloqueada.", "Llamada en espera.", "Desconectado.",
     "Entrada incorrecta.", "Bienvenido.", "Hasta luego.", "Carpeta cinco.", "Opción inválida.",
     "Uno.", "Dos.", "Tres.", "Cuatro.", "Cinco.", "Seis.", "Siete.", "Ocho.", "Nueve.", "Diez.",
     "Lunes.", "Martes.", "Enero.", "Febrero."])]  # fmt: skip


@pytest.mark.parametrize("language", ["fr", "es", "it", "ru"])
def test_profile_lang_composes_for_each_language(language):
    cfg = to_config(yaml.safe_load(compose_params(["profile=lang", f"corpus.language={language}"],
                                                  REPO / "params")))  # fmt: skip
    assert (cfg.recipe, cfg.corpus.source, cfg.corpus.language) == ("asr_lang", "asterisk", language)
    assert isinstance(recipe_of(cfg), LanguageASR)
    assert cfg.score.normalizer == f"spoken_{language}_v1"  # the profile's ${corpus.language}, resolved
    dirs = [cfg.corpus.dir, cfg.cache.dir, cfg.train.dir, cfg.decode.dir, cfg.baseline.dir, cfg.score.dir]
    assert all(f"lang/{language}" in d for d in dirs)  # each language writes its own run
    assert (cfg.encoder.path, cfg.llm.path) == ("models/whisper-base", "llms/qwen2.5-coder-0.5b-instruct")
    assert cfg.baseline.finetune_minutes > 0 and cfg.decode.sets == cfg.baseline.sets == ["test"]


def test_a_language_without_prompts_or_normaliser_is_refused():
    with pytest.raises(ConfigError, match="spoken_de_v1"):  # no such normaliser: Debian has no German prompts
        to_config(yaml.safe_load(compose_params(["profile=lang", "corpus.language=de"], REPO / "params")))
    cfg = SlamConfig()
    cfg.recipe, cfg.corpus.language, cfg.score.normalizer = "asr_lang", "it", "spoken_es_v1"
    with pytest.raises(ConfigError, match="spoken_es_v1 does not read numbers in corpus.language 'it'"):
        recipe_of(cfg).check_training(cfg, use_cache=True)
    cfg.score.normalizer = "basic_v1"  # any other normaliser is the user's choice
    recipe_of(cfg).check_training(cfg, use_cache=True)


def test_spoken_normalisers_read_numbers_in_the_language_and_fold_letters():
    assert normalize("Marque 1, contraseña; 21.", "spoken_es_v1") == "marque uno contrasena veintiuno"
    assert normalize("premere 500 per l'aiuto, però", "spoken_it_v1") == (
        "premere cinquecento per l aiuto pero")
    assert normalize("Appuyez sur 21, puis dièse.", "spoken_fr_v1") == "appuyez sur vingt et un puis diese"
    assert normalize("Нажмите 2 и решётку.", "spoken_ru_v1") == "нажмите два и решетку"
    assert normalize("Привет, й", "spoken_ru_v1") == "привет й"  # й is a letter of its own, not и
    # Whisper's digits and the prompt's words score alike; WER and CER from the same texts
    scored = score_wer({"a": "Marque uno para ventas.", "b": "Adiós"}, {"a": "Marque 1 para bentas", "b": ""},
                       "spoken_es_v1", cer=True)  # fmt: skip
    summary, rows = scored["summary"], {r["id"]: r for r in scored["utterances"]}
    assert (rows["a"]["errors"], rows["a"]["char_errors"], rows["a"]["ref_chars"]) == (1, 1, 22)
    assert (rows["b"]["errors"], rows["b"]["char_errors"]) == (1, 5)
    assert summary["wer"] == pytest.approx(2 / 5) and summary["cer"] == pytest.approx(6 / 27)
    assert "cer" not in score_wer({"a": "uno"}, {"a": "uno"}, "spoken_es_v1")["summary"]  # as before


def test_asr_lang_train_decode_baselines_and_score(tiny_cfg, fake_prompts, pinned):
    from slam.data.cache import build_cache
    from slam.data.corpora import prepare_corpus
    from slam.decode.hyps import RUN_FILE, read_hyps
    from slam.decode.stage import decode, decode_baseline
    from slam.score.stage import score
    from slam.train.loop import train

    cfg = tiny_cfg
    fake_prompts("es", LINES)
    cfg.recipe, cfg.corpus.source, cfg.corpus.language = "asr_lang", "asterisk", "es"
    cfg.corpus.real_sets = []
    cfg.corpus.num_utterances, cfg.corpus.dev_fraction, cfg.corpus.test_fraction = 0, 0.2, 0.3
    cfg.score.normalizer = "spoken_es_v1"
    cfg.train.max_steps, cfg.train.checkpoint_every, cfg.train.ctc_warmup_steps = 3, 3, 2
    cfg.train.dev_wer_cuts, cfg.train.eval_every, cfg.train.num_buckets = 2, 3, 2
    cfg.decode.max_new_tokens = cfg.baseline.max_new_tokens = 4
    cfg.decode.ctc_weight = 0.5  # joint CTC/LLM decoding, as the profile's
    cfg.baseline.finetune_minutes, cfg.baseline.finetune_dev_cuts = 0.01, 2  # Whisper + fine-tuning
    sets = prepare_corpus(cfg)
    assert {name: len(cuts) for name, cuts in sets.items()} == {"train": 13, "dev": 9, "test": 10}
    build_cache(cfg)
    summary = train(cfg)
    assert summary["steps"] == 3

    decode(cfg)
    decode_baseline(cfg)
    test_ids = sorted(c.id for c in sets["test"])
    for path in (Path(cfg.decode.dir) / "test.beam1.jsonl", Path(cfg.baseline.dir) / "test.beam1.jsonl",
                 Path(cfg.baseline.dir) / "test.finetuned.jsonl"):  # fmt: skip
        assert sorted(r["id"] for r in read_hyps(path)) == test_ids, path

    metrics = score(cfg)
    for system, labels in ("llm", {"test.beam1", "test.ctc"}), ("whisper", {"test.beam1", "test.finetuned"}):
        assert set(metrics[system]) == labels
        assert all(0 <= r["cer"] and r["ref_chars"] > r["ref_words"] for r in metrics[system].values())
    table = (Path(cfg.score.dir) / "asr_lang" / "results.md").read_text()
    assert "| system | decoding | WER test (%) | CER test (%) |" in table
    assert "| Whisper (own decoder), fine-tuned on the training set | greedy |" in table
    # the table's cells: each system's run carries WER and CER of every hypothesis file
    mlflow.set_tracking_uri(cfg.tracking.uri)
    for directory, names in ((cfg.decode.dir, ["wer_test_beam1", "cer_test_beam1"]),
                             (cfg.baseline.dir, ["cer_test_beam1", "cer_test_finetuned"])):
        run = mlflow.get_run(json.loads((Path(directory) / RUN_FILE).read_text())["mlflow_run_id"])
        assert set(names) <= set(run.data.metrics) and run.data.tags["recipe"] == "asr_lang"
    pinned("asr_lang", {"train": summary, "score": {s: {k: {m: v[m] for m in ("wer", "cer")}
                                                        for k, v in r.items()} for s, r in metrics.items()}})


def _run(run_id: str, language: str, system: str, **metrics: float) -> SimpleNamespace:
    info = SimpleNamespace(run_id=run_id, start_time=1, status="FINISHED", experiment_id="1")
    tags = {"recipe": "asr_lang", "profile": "lang", "system": system}
    return SimpleNamespace(info=info, data=SimpleNamespace(tags=tags, params={"corpus.language": language},
                                                           metrics=metrics))


def test_the_table_iv_spec_has_a_row_per_language_and_renders():
    specs = {s.name: s for s in load_specs(REPO / "params" / "tables.yaml")}
    spec = specs["table4_languages"]
    assert [r.match for r in spec.rows] == [{"param.corpus.language": c} for c in ("fr", "es", "it", "ru")]
    runs = [_run("w", "es", "whisper", wer_test_beam1=0.31, cer_test_beam1=0.12, wer_test_finetuned=0.2,
                 cer_test_finetuned=0.08),
            _run("l", "es", "llm", wer_test_beam1=0.9, cer_test_beam1=0.6),
            _run("other", "es", "llm", wer_test_beam1=0.1)]  # fmt: skip
    runs[2].data.tags["profile"] = "smoke"  # another profile's run never fills a cell
    table = build_table(spec, runs)  # type: ignore[arg-type]
    spanish = [table.display(c) for c in table.cells[1]]
    assert spanish == ["31.0", "12.0", "20.0", "8.0", "90.0", "60.0"]
    assert all(table.display(c) == "missing" for row in (0, 2, 3) for c in table.cells[row])
    markdown = render_markdown(table)
    assert "Spanish" in markdown and "Russian" in markdown and "+ fine-tuning" in markdown
