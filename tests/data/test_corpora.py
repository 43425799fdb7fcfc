"""Corpora: text normalisation and split, TTS rendering, asterisk parsing (English and the other
languages: their cleaning, the split by prompt text, source ``asterisk``), user import, validation."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from lhotse import AudioSource, CutSet, MonoCut, Recording, SupervisionSegment

from slam.config import ConfigError, SlamConfig
from slam.data.cache import checked_dev_set
from slam.data.corpora import CORPORA, BadInputError, check_set_names, prepare_corpus, without_texts
from slam.data.corpora.asterisk import (
    ITALIAN,
    LANGUAGES,
    RUSSIAN,
    SPANISH,
    clean_prompt,
    load_asterisk,
    parse_prompts,
    split_prompts,
)
from slam.data.corpora.text import (
    FORTUNES_DIR,
    WORDNET_DIR,
    count_words,
    message_sentences,
    normalize_sentence,
    number_to_words,
    pick_sentences,
    sentence_key,
    split_of,
    spoken_forms,
    year_to_words,
)
from slam.data.corpora.tts import EspeakEngine, PicoEngine, RenderJob, render
from slam.data.corpora.user import load_user_corpus
from slam.data.corpora.validate import validate_cuts
from slam.testing import write_mo

needs_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or shutil.which("sox") is None,
    reason="espeak-ng and sox (Debian packages) are needed to synthesise speech",
)
needs_text = pytest.mark.skipif(
    not (WORDNET_DIR.is_dir() and FORTUNES_DIR.is_dir()),
    reason="Debian packages wordnet-base and fortunes provide the sentences",
)


def _speech_like(seconds: float, sr: int, lead: float = 0.0) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return np.concatenate([np.zeros(int(lead * sr)), x]).astype(np.float32)


def _cut(path: Path, cut_id: str, text: str | None = "hello world") -> MonoCut:
    info = sf.info(str(path))
    rec = Recording(
        id=cut_id,
        sources=[AudioSource(type="file", channels=[0], source=str(path))],
        sampling_rate=info.samplerate,
        num_samples=info.frames,
        duration=info.frames / info.samplerate,
    )
    sup = SupervisionSegment(id=cut_id, recording_id=cut_id, start=0, duration=rec.duration, text=text)
    return MonoCut(id=cut_id, start=0, duration=rec.duration, channel=0, recording=rec, supervisions=[sup])


# ------------------------------------------------------------------------------- text


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("he paid $5 for the 1st ticket", "He paid five dollars for the first ticket."),
        (
            "In 1984 they sold 1,200 boats",
            "In nineteen eighty-four they sold one thousand two hundred boats.",
        ),
        ("A day for firm decisions!!!!!  Or is it?", "A day for firm decisions! Or is it?"),
        ("Mr. Smith went to Washington...", "Mister Smith went to Washington."),
        ("you will still have PEANUT BUTTER!", "You will still have peanut butter!"),
        ("the \u2018full\u2019 life of the dogs' owners", "The full life of the dogs' owners."),
        ("caf\u00e9 au lait -- very nice", "Cafe au lait, very nice."),
        ("'Tis the season", "'Tis the season."),
        ("The U.S. is big", None),  # initials: no single reading
        ("I work at IBM now", None),  # acronym: spelled by some engines only
        ("your csh still works", None),  # lower-case acronym
        ("pi is 3.14 or so", None),  # decimal
        ("press 3D now", None),  # digits glued to letters
        ("see <b>this</b> now", None),  # markup
        ("A: who is there", None),  # dialogue markup
    ],
)
def test_normalize_sentence(raw: str, expected: str | None) -> None:
    assert normalize_sentence(raw) == expected


def test_number_words() -> None:
    assert number_to_words(0) == "zero"
    assert number_to_words(115) == "one hundred fifteen"
    assert number_to_words(2_000_021) == "two million twenty-one"
    assert year_to_words(1905) == "nineteen oh five"
    assert year_to_words(2000) == "two thousand"


def test_hash_split_is_stable_and_disjoint() -> None:
    pool = [f"Sentence number {number_to_words(i)} is here." for i in range(3000)]
    splits = [split_of(s, 0.05, 0.08) for s in pool]
    assert splits == [split_of(s, 0.05, 0.08) for s in pool]  # deterministic
    # pinned values: the split must not depend on the process (hashlib, not hash())
    assert [split_of(s, 0.05, 0.08) for s in pool[:12]] == [
        "train", "train", "dev", "test", "train", "dev",
        "train", "train", "test", "train", "train", "train",
    ]  # fmt: skip
    assert 0.05 < splits.count("test") / len(pool) < 0.11
    assert 0.03 < splits.count("dev") / len(pool) < 0.07
    # case and punctuation do not move a sentence to another set
    assert all(split_of(s.upper().rstrip("."), 0.05, 0.08) == sp for s, sp in zip(pool, splits, strict=True))
    chosen = pick_sentences(pool, 1000, 0.05, 0.08)
    keys = {name: {sentence_key(s) for s in sents} for name, sents in chosen.items()}
    assert sum(len(v) for v in chosen.values()) == 1000
    assert (
        not keys["train"] & keys["dev"]
        and not keys["train"] & keys["test"]
        and not keys["dev"] & keys["test"]
    )
    assert len(keys["train"]) == len(chosen["train"])  # one rendering per sentence


# -------------------------------------------------------------------------------- tts


@needs_espeak
def test_espeak_render_is_16k_and_trimmed(tmp_path: Path) -> None:
    sentences = ["The cat sat on the mat.", "A green door opened slowly.", "Bring me the old red boat."]
    jobs = [
        RenderJob(id=f"u{i}", split="train", text=t, engine="espeak", voice=v, speed=1.1, pitch=50)
        for i, (t, v) in enumerate(zip(sentences * 2, ["en-us+m1"] * 3 + ["en-gb+f2"] * 3, strict=True))
    ]
    jobs.append(RenderJob(id="bad", split="train", text="Hello there.", engine="espeak", voice="xx-none"))
    report = render(jobs, tmp_path / "wav", {"espeak": EspeakEngine()}, num_workers=2)
    assert sorted(report.done) == [f"u{i}" for i in range(6)]
    assert list(report.failed) == ["bad"]  # a failed render is counted, not fatal
    for path in report.done.values():
        audio, sr = sf.read(str(path))
        info = sf.info(str(path))
        assert sr == 16000 and info.channels == 1 and info.subtype == "PCM_16"
        assert len(audio) / sr > 0.5
        loud = np.flatnonzero(np.abs(audio) > 0.02 * np.abs(audio).max())
        assert loud[0] / sr < 0.1  # leading silence trimmed to the 50 ms pad
        assert (len(audio) - loud[-1]) / sr < 0.15  # and the trailing silence too


@needs_espeak
@needs_text
def test_prepare_corpus_tiny_synthesis(tmp_path: Path) -> None:
    cfg = SlamConfig()
    cfg.corpus.dir = str(tmp_path / "corpus")
    cfg.corpus.num_utterances = 6
    cfg.corpus.dev_fraction = 1 / 6
    cfg.corpus.test_fraction = 1 / 6
    cfg.corpus.engines = ["espeak"]
    cfg.corpus.real_sets = []
    cfg.tracking.uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # prepare logs its counts to MLflow
    sets = prepare_corpus(cfg)
    assert {k: len(v) for k, v in sets.items()} == {"train": 4, "dev": 1, "test": 1}
    stats = json.loads((tmp_path / "corpus" / "stats.json").read_text())
    for name in ("train", "dev", "test"):
        cuts = CutSet.from_file(tmp_path / "corpus" / f"{name}.jsonl.gz")
        assert stats["sets"][name]["cuts"] == len(cuts)
        for cut in cuts:
            sup = cut.supervisions[0]
            assert cut.sampling_rate == 16000 and cut.duration > 0
            assert sup.text and sup.speaker.startswith("espeak:")
            assert sup.custom["engine"] == "espeak" and 0.8 < sup.custom["speed"] < 1.5
            assert cut.load_audio().shape[0] == 1
    assert stats["synthesis"]["utterances"] == 6 and stats["synthesis"]["failed"] == 0


def test_short_utterances_add_short_training_sentences_and_leave_the_others_alone(tmp_path: Path) -> None:
    def build(short: int) -> dict[str, dict[str, tuple[str, str]]]:
        cfg = SlamConfig()
        cfg.corpus.dir = str(tmp_path / f"corpus{short}")
        cfg.corpus.num_utterances, cfg.corpus.dev_fraction, cfg.corpus.test_fraction = 6, 1 / 6, 1 / 6
        cfg.corpus.engines, cfg.corpus.real_sets, cfg.corpus.short_utterances = ["espeak"], [], short
        cfg.tracking.uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
        return {name: {c.id: (c.supervisions[0].text, c.supervisions[0].speaker) for c in cuts}
                for name, cuts in prepare_corpus(cfg).items()}  # fmt: skip

    plain, more = build(0), build(3)
    assert more["dev"] == plain["dev"] and more["test"] == plain["test"]  # same texts, same voices
    extra = {k: v for k, v in more["train"].items() if k not in plain["train"]}
    assert len(extra) == 3 and {k: more["train"][k] for k in plain["train"]} == plain["train"]
    assert all(1 <= count_words(text) < 4 for text, _ in extra.values())
    assert all(split_of(text, 1 / 6, 1 / 6) == "train" for text, _ in extra.values())


def test_message_sentences_are_the_training_split_messages_of_the_named_catalogs(tmp_path: Path) -> None:
    header = {"": "Content-Type: text/plain; charset=UTF-8\n"}
    sentences = ["Cannot open the archive for reading", "The connection was refused by the server",
                 "Please enter your new password again", "Failed to fetch some of the archives",
                 "The selected file is not a folder", "Could not write the configuration file"]  # fmt: skip
    write_mo(tmp_path / "fr/LC_MESSAGES/tool.mo", {**header, **{m: "traduit" for m in sentences[:4]},
                                                   "%s: not found here": "%s : introuvable",  # a code
                                                   "Invalid password": "Mot de passe invalide"})  # too short
    write_mo(tmp_path / "de/LC_MESSAGES/tool.mo", {**header, **{m: "übersetzt" for m in sentences[2:]}})
    write_mo(tmp_path / "fr/LC_MESSAGES/other.mo", {**header, "Another program says this": "autre"})
    got = message_sentences(10, ["tool", "absent"], 4, 14, 0.25, 0.25, seed=0, locale_dir=tmp_path)
    # every locale's message ids, normalised; only those whose text hashes into train
    expected = {f"{s}." for s in sentences if split_of(s, 0.25, 0.25) == "train"}
    assert set(got) == expected and len(got) == len(expected) and 0 < len(expected) < len(sentences)
    assert message_sentences(1, ["tool"], 4, 14, 0.25, 0.25, seed=0, locale_dir=tmp_path)[0] in expected
    assert message_sentences(0, [], 4, 14, 0.25, 0.25, seed=0, locale_dir=tmp_path) == []
    with pytest.raises(ValueError, match="corpus.catalogs"):
        message_sentences(5, [], 4, 14, 0.25, 0.25, seed=0, locale_dir=tmp_path)


def test_spoken_forms_are_distinct_training_phrases_the_engines_read_as_written() -> None:
    got = spoken_forms(600, 0.25, 0.25, seed=0)
    assert len(got) == 600 and len({sentence_key(t) for t in got}) == 600
    assert got == spoken_forms(600, 0.25, 0.25, seed=0) != spoken_forms(600, 0.25, 0.25, seed=1)
    assert all(split_of(t, 0.25, 0.25) == "train" for t in got)
    # the engines are fed normalised text: a phrase the normaliser would change is not what is said
    assert all(normalize_sentence(t) == t for t in got)
    words = {w for t in got for w in sentence_key(t).split()}
    assert {"o'clock", "fifteenth", "sierra", "october", "oh"} <= words  # every kind is drawn
    assert spoken_forms(0, 0.25, 0.25, seed=0) == []


def test_training_cuts_that_say_a_real_prompt_are_dropped() -> None:
    def cuts(*texts: str) -> CutSet:
        sup = [SupervisionSegment(id=f"s{i}", recording_id=f"r{i}", start=0, duration=1.0, text=t)
               for i, t in enumerate(texts)]  # fmt: skip
        return CutSet.from_cuts(MonoCut(id=f"c{i}", start=0, duration=1.0, channel=0, supervisions=[s])
                                for i, s in enumerate(sup))  # fmt: skip

    train = cuts("Disabled.", "The file is disabled.", "disabled")
    kept, dropped = without_texts(train, [cuts("Disabled"), cuts("Goodbye.")])
    assert dropped == 2 and [c.supervisions[0].text for c in kept] == ["The file is disabled."]
    same, none = without_texts(train, [cuts("Goodbye.")])
    assert none == 0 and same is train  # nothing to drop: the very same set (its manifest unchanged)


# ---------------------------------------------------------------------------- asterisk


def test_asterisk_parser_and_cleaning(tmp_path: Path) -> None:
    txt = tmp_path / "core-sounds-en.txt.gz"
    with gzip.open(txt, "wt") as f:
        f.write(
            "; Core Asterisk Sounds in English\n\n"
            "activated: Activated.\n"
            "vm-next: Press 6 to play the next message.\n"
            "beep: [this is a simple beep tone]\n"
            "silence/1: (1 second of silence)\n"
            "spy-h323: H.323\n"
            "conf-x: ...has joined the conference. <beep>\n"
            "dictate/help: press * to pause, press # to exit\n"
            "gone: This prompt has no recording.\n"
        )
    assert parse_prompts(txt)[0] == ("activated", "Activated.")
    assert len(parse_prompts(txt)) == 8
    assert clean_prompt("press * to pause, press # to exit") == "press star to pause, press pound to exit"
    sounds = tmp_path / "sounds"
    (sounds / "silence").mkdir(parents=True)
    (sounds / "dictate").mkdir()
    for name in ("activated", "vm-next", "beep", "silence/1", "spy-h323", "conf-x", "dictate/help"):
        sf.write(str(sounds / f"{name}.wav"), _speech_like(0.5, 8000), 8000, subtype="PCM_16")
    cuts, dropped = load_asterisk(txt, sounds)
    texts = {c.supervisions[0].custom["prompt"]: c.supervisions[0].text for c in cuts}
    assert texts == {
        "activated": "Activated.",
        "vm-next": "Press six to play the next message.",
        "conf-x": "has joined the conference.",
        "dictate/help": "press star to pause, press pound to exit",
    }
    assert dropped == {"no_text": 2, "ambiguous_text": 1, "no_audio": 1}
    cuts, counts = validate_cuts(cuts, 16000)
    assert counts["resampled"] == 4 and all(c.sampling_rate == 16000 for c in cuts)
    assert cuts[0].load_audio().shape == (1, 8000)


@pytest.mark.skipif(not Path("/usr/share/asterisk/sounds/en").is_dir(), reason="asterisk-core-sounds-en-wav")
def test_real_dev_fraction_holds_out_prompts_of_a_real_set_as_its_dev_part(tmp_path: Path) -> None:
    cfg = SlamConfig()
    cfg.corpus.dir = str(tmp_path / "corpus")
    cfg.corpus.num_utterances, cfg.corpus.real_sets, cfg.corpus.real_dev_fraction = 0, ["asterisk_en"], 0.5
    cfg.tracking.uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = prepare_corpus(cfg)
    test, dev = sets["asterisk_en"], sets["asterisk_en_dev"]
    texts = {name: {sentence_key(c.supervisions[0].text) for c in sets[name]} for name in sets}
    assert not texts["asterisk_en"] & texts["asterisk_en_dev"]  # no prompt text on both sides
    assert 0.4 < len(dev) / (len(dev) + len(test)) < 0.6 and len(dev) + len(test) > 500
    stats = json.loads((tmp_path / "corpus" / "stats.json").read_text())
    assert stats["sets"]["asterisk_en_dev"]["cuts"] == len(dev)
    cfg.train.dev_set = "asterisk_en_dev"
    assert checked_dev_set(cfg, cfg.corpus.dir) == "asterisk_en_dev"
    cfg.train.dev_set = "dev"  # the synthetic dev set does not exist in this corpus
    with pytest.raises(ConfigError, match=r"train.dev_set 'dev'.*asterisk_en_dev"):
        checked_dev_set(cfg, cfg.corpus.dir)
    cfg.corpus.user_manifests = {"asterisk_en_dev": "mine.jsonl"}
    with pytest.raises(ConfigError, match="clash"):
        check_set_names(cfg)


def _median_f0(audio: np.ndarray, sr: int) -> float:
    """Median autocorrelation pitch (70-400 Hz) of the voiced 40 ms frames."""
    frame, pitches = int(0.04 * sr), []
    for start in range(0, len(audio) - frame, frame // 4):
        x = audio[start : start + frame] - audio[start : start + frame].mean()
        if np.sqrt((x**2).mean()) < 0.02:
            continue
        ac = np.correlate(x, x, "full")[frame - 1 :]
        lag = sr // 400 + int(np.argmax(ac[sr // 400 : sr // 70]))
        if ac[lag] > 0.4 * ac[0]:
            pitches.append(sr / lag)
    return float(np.median(pitches))


@pytest.mark.skipif(shutil.which("pico2wave") is None or shutil.which("sox") is None,
                    reason="pico2wave (Debian non-free libttspico-utils) and sox")  # fmt: skip
def test_pico_renders_its_speed_and_pitch_and_keeps_the_text_out_of_its_markup(tmp_path: Path) -> None:
    text = "Fish and chips cost less than five pounds today."
    jobs = [RenderJob(id="low", split="train", text=text, engine="pico", voice="en-US", pitch=65),
            RenderJob(id="high", split="train", text=text, engine="pico", voice="en-US", pitch=135),
            RenderJob(id="fast", split="train", text=text, engine="pico", voice="en-US", speed=1.3, pitch=65),
            RenderJob(id="marks", split="train", text="Fish & chips cost <b>less</b> than five pounds.",
                      engine="pico", voice="en-GB", pitch=100)]  # fmt: skip
    report = render(jobs, tmp_path / "wav", {"pico": PicoEngine()}, num_workers=2)
    assert not report.failed
    audio = {}
    for job_id, path in report.done.items():
        audio[job_id], sr = sf.read(str(path))
        assert sr == 16000
    assert _median_f0(audio["high"], sr) > 1.5 * _median_f0(audio["low"], sr)  # 135 % against 65 %
    assert len(audio["fast"]) < 0.85 * len(audio["low"])
    # the text's own "<" and ">" would be tags inside the markup: only the engine's four are
    markup = PicoEngine().command(jobs[-1], tmp_path / "x.wav")[-1]
    assert markup.count("<") == markup.count(">") == 4 and "Fish & chips cost  b less" in markup
    with pytest.raises(ValueError, match="speaks"):
        PicoEngine("ru")


def test_registry_names() -> None:
    assert {"asterisk_en", "user_manifest"} <= set(CORPORA.names())


# ------------------------------------------------- asterisk prompts of other languages (profile lang)

WORDS_ES = ("rojo verde azul negro blanco gris claro oscuro grande corto largo nuevo "
         "viejo alto bajo lento").split()  # fmt: skip


def _spanish_lines(n: int = 120) -> list[str]:
    """``n`` prompts of distinct two-word texts, plus "Gracias" under three names and spellings."""
    texts = [f"{a} {b}" for a in WORDS_ES for b in WORDS_ES if a != b][:n]
    return [f"p{i}: {text.capitalize()}." for i, text in enumerate(texts)] + [
        "thanks: Gracias.", "auth-thankyou: gracias", "vm-goodbye: ¡GRACIAS!"]  # fmt: skip


def _write_gz(path: Path, text: str, bom: bool = False) -> Path:
    with gzip.open(path, "wt", encoding="utf-8-sig" if bom else "utf-8") as f:
        f.write(text)
    return path


def _sounds(directory: Path, names: list[str]) -> Path:
    for name in names:
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(directory / f"{name}.wav"), _speech_like(0.1, 8000), 8000, subtype="PCM_16")
    return directory


def test_keys_and_word_counts_of_other_scripts_leave_latin_text_as_it_was():
    # Cyrillic words are words (before, every Russian sentence had the key "" and 0 words)
    assert sentence_key("Нажмите 1, затем — решётку!") == "нажмите 1 затем решётку"
    assert sentence_key("Введите пароль.") != sentence_key("Введите номер.")
    assert count_words("Нажмите решётку, Q.") == 3
    # Latin letters outside ASCII are dropped as before: French keys and splits stay the same
    assert sentence_key("L'arrière-plan é") == "l'arri re plan"
    assert count_words("à la maison") == 2
    assert split_of("gracias", 0.2, 0.3) == split_of("Gracias!", 0.2, 0.3)


def test_russian_italian_and_spanish_transcripts_are_cleaned_in_their_language(tmp_path):
    ru = _write_gz(tmp_path / "ru.txt.gz", "; Russian\n"
                "conf-adminmenu: conf-adminmenu: Нажмите 1 и #.\n"  # the name repeated in the text
                "beep: [this is a simple beep tone]\n"
                "demo-moreinfo: Информация на сайте www.asterisk.org\n"  # no single reading
                "demo-instruct: не ниже 28,8 килобит\n"
                "dir-intro: Используйте клавишу 7 для буквы «Q».\n")  # fmt: skip
    names = [name for name, _ in parse_prompts(ru)]
    cuts, dropped = load_asterisk(ru, _sounds(tmp_path / "ru", names), RUSSIAN)
    texts = {c.supervisions[0].custom["prompt"]: c.supervisions[0].text for c in cuts}
    assert texts == {"conf-adminmenu": "Нажмите один и решётка.",
                     "dir-intro": "Используйте клавишу семь для буквы «Q»."}  # fmt: skip
    assert dropped == {"no_text": 1, "ambiguous_text": 2}
    assert {(c.supervisions[0].language, c.supervisions[0].speaker) for c in cuts} == {
        ("Russian", "asterisk_ru_ivrvoice")}

    # the Italian file starts with a byte-order mark and lost accented letters to "?"
    it = _write_gz(tmp_path / "it.txt.gz", "; Italian\nconf-full: La conferenza ? piena.\n"
                "pls-try-call-later: riprova pi? tardi.\nvm-login: Posta vocale. Casella di posta?\n"
                "dictate/forhelp: premere 0 per l'aiuto\n", bom=True)  # fmt: skip
    assert parse_prompts(it)[0] == ("conf-full", "La conferenza ? piena.")
    names = [name for name, _ in parse_prompts(it)]
    cuts, dropped = load_asterisk(it, _sounds(tmp_path / "it", names), ITALIAN)
    kept = {c.supervisions[0].text for c in cuts}
    assert kept == {"Posta vocale. Casella di posta?", "premere zero per l'aiuto"}
    assert dropped == {"ambiguous_text": 2}

    # a name listed twice with two texts: which one the wav says is unknown
    es = _write_gz(tmp_path / "es.txt.gz", "digits/0: cero\ndigits/0: diez\ndigits/1: uno\nspy-h323: h-323\n")
    cuts, dropped = load_asterisk(es, _sounds(tmp_path / "es", ["digits/0", "digits/1", "spy-h323"]), SPANISH)
    assert [(c.id, c.supervisions[0].text) for c in cuts] == [("asterisk_es-digits-1", "uno")]
    assert dropped == {"conflicting_text": 1, "ambiguous_text": 1}


def test_the_prompt_split_is_text_disjoint_deterministic_and_seeded(fake_prompts):
    fake_prompts("es", _spanish_lines())
    cuts, _ = load_asterisk(language=LANGUAGES["es"])
    assert len(cuts) == 123
    parts = split_prompts(cuts, 0.15, 0.3, seed=0)
    ids = {name: [c.id for c in part] for name, part in parts.items()}
    assert sorted(id_ for part in ids.values() for id_ in part) == sorted(c.id for c in cuts)  # each once
    keys = {name: {sentence_key(c.supervisions[0].text) for c in part} for name, part in parts.items()}
    assert not (keys["train"] & keys["dev"] or keys["train"] & keys["test"] or keys["dev"] & keys["test"])
    thanks = {name for name, texts in keys.items() if "gracias" in texts}
    assert len(thanks) == 1  # "Gracias.", "gracias" and "¡GRACIAS!": one text, one split
    assert 0.15 < len(parts["test"]) / len(cuts) < 0.45 and 0.05 < len(parts["dev"]) / len(cuts) < 0.3
    # the same seed, the same split, whatever order the prompts come in; another seed, another draw
    again = split_prompts(cuts.shuffle(rng=np.random.default_rng(1)), 0.15, 0.3, seed=0)
    assert {name: sorted(c.id for c in part) for name, part in again.items()} == {
        name: sorted(part) for name, part in ids.items()}
    other = split_prompts(cuts, 0.15, 0.3, seed=1)
    assert {c.id for c in other["test"]} != set(ids["test"])


def test_a_missing_debian_package_is_named(tmp_path, fake_prompts):
    with pytest.raises(FileNotFoundError, match=r"install the Debian package asterisk-core-sounds-ru \("):
        load_asterisk(tmp_path / "absent.txt.gz", language=RUSSIAN)
    text = _write_gz(tmp_path / "ru.txt.gz", "auth-thankyou: Спасибо.\n")
    with pytest.raises(FileNotFoundError, match="install the Debian package asterisk-core-sounds-ru-wav"):
        load_asterisk(text, tmp_path / "no-sounds", RUSSIAN)
    # through the corpus: a language without the packages, and one Debian has no prompts in
    cfg = SlamConfig()
    cfg.corpus.dir, cfg.corpus.source, cfg.corpus.real_sets = str(tmp_path / "corpus"), "asterisk", []
    cfg.corpus.num_utterances, cfg.tracking.uri = 0, f"sqlite:///{tmp_path / 'mlflow.db'}"
    root = fake_prompts("it", ["activated: Attivato."])
    shutil.rmtree(root / "sounds")
    cfg.corpus.language = "it"
    with pytest.raises(FileNotFoundError, match="asterisk-core-sounds-it-wav"):
        prepare_corpus(cfg)
    cfg.corpus.language = "de"
    with pytest.raises(ConfigError, match=r"corpus.language 'de'.*en, es, fr, it, ru"):
        prepare_corpus(cfg)
    assert {"asterisk_es", "asterisk_it", "asterisk_ru"} <= set(CORPORA.names())


def _prepared_prompts(tmp_path: Path, **corpus: object) -> tuple[SlamConfig, dict, dict]:
    cfg = SlamConfig()
    cfg.corpus.dir, cfg.tracking.uri = str(tmp_path / "corpus"), f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg.corpus.source, cfg.corpus.language, cfg.corpus.real_sets = "asterisk", "es", []
    cfg.corpus.dev_fraction, cfg.corpus.test_fraction, cfg.corpus.num_utterances = 0.15, 0.3, 0
    for key, value in corpus.items():
        setattr(cfg.corpus, key, value)
    sets = prepare_corpus(cfg)
    return cfg, sets, json.loads((tmp_path / "corpus" / "stats.json").read_text())


def test_the_asterisk_source_is_the_real_prompts_split_by_text(tmp_path, fake_prompts):
    fake_prompts("es", _spanish_lines())
    _, sets, stats = _prepared_prompts(tmp_path)  # num_utterances 0: the prompts alone
    assert set(sets) == {"train", "dev", "test"}
    parts = split_prompts(load_asterisk(language=LANGUAGES["es"])[0], 0.15, 0.3, 0)
    assert {name: sorted(c.id for c in cuts) for name, cuts in sets.items()} == {
        name: sorted(c.id for c in part) for name, part in parts.items()}
    assert all(c.sampling_rate == 16000 for cuts in sets.values() for c in cuts)  # 8 kHz prompts, resampled
    assert stats["synthesis"]["prompts_by_split"] == {name: len(part) for name, part in parts.items()}
    assert stats["sets"]["train"]["speakers"] == 1


@needs_espeak
def test_synthetic_speech_of_the_language_pads_only_the_training_part(tmp_path, fake_prompts):
    fake_prompts("es", _spanish_lines())
    plain = split_prompts(load_asterisk(language=LANGUAGES["es"])[0], 0.15, 0.3, 0)
    held_out = sorted({c.supervisions[0].text for name in ("dev", "test") for c in plain[name]})
    sentences = ["el archivo no existe", "no se puede abrir la ventana", "la red no responde",
                 "guardar los cambios antes de salir", held_out[0].lower().rstrip(".")]  # fmt: skip
    tsv = tmp_path / "es.tsv"
    tsv.write_text("".join(f"{s}\ttranslation {i}\n" for i, s in enumerate(sentences)))
    _, sets, stats = _prepared_prompts(tmp_path, num_utterances=8, parallel_text=str(tsv),
                               engines=["espeak", "flite"], min_words=2, max_words=8, join_fraction=0.0)
    synthetic = [c for c in sets["train"] if c.supervisions[0].speaker != "asterisk_es_allison"]
    assert len(synthetic) == 8 and len(sets["train"]) == len(plain["train"]) + 8
    assert {c.supervisions[0].speaker.split("+")[0] for c in synthetic} <= {"espeak:es", "espeak:es-419"}
    assert {c.supervisions[0].language for c in synthetic} == {"Spanish"}
    # no synthetic utterance says a dev or test prompt, and dev and test stay real
    said = {sentence_key(c.supervisions[0].text) for c in synthetic}
    assert said <= {sentence_key(s) for s in sentences[:4]}
    for name in ("dev", "test"):
        assert sorted(c.id for c in sets[name]) == sorted(c.id for c in plain[name])
    assert stats["sets"]["train"]["engines"] == {"espeak": 8}


# ------------------------------------------------------------------------- user import


def _write_slam(tmp_path: Path, entries: list[tuple[str, str, str]]) -> Path:
    path = tmp_path / "user.jsonl"
    path.write_text("".join(json.dumps({"key": k, "source": s, "target": t}) + "\n" for k, s, t in entries))
    return path


def test_slam_jsonl_import(tmp_path: Path) -> None:
    sf.write(str(tmp_path / "a.wav"), _speech_like(1.0, 16000), 16000)
    sf.write(str(tmp_path / "b.wav"), _speech_like(0.7, 8000), 8000)
    manifest = _write_slam(
        tmp_path, [("utt-a", str(tmp_path / "a.wav"), "hello there"), ("utt-b", "b.wav", "bye")]
    )
    cuts, counts = load_user_corpus(str(manifest), 16000)
    assert [c.id for c in cuts] == ["utt-a", "utt-b"]
    assert [c.supervisions[0].text for c in cuts] == ["hello there", "bye"]
    assert counts["resampled"] == 1 and counts["skipped"] == {}
    assert all(c.sampling_rate == 16000 for c in cuts)
    assert cuts[1].load_audio().shape == (1, 11200)  # relative path found beside the jsonl


@pytest.fixture
def broken_wavs(tmp_path: Path) -> dict[str, Path]:
    good = tmp_path / "good.wav"
    sf.write(str(good), _speech_like(1.0, 16000), 16000)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4000))
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, dtype=np.int16), 16000)
    return {"good": good, "corrupt": corrupt, "empty": empty}


@pytest.mark.parametrize("bad", ["corrupt", "empty"])
def test_bad_wav_in_slam_jsonl(tmp_path: Path, broken_wavs: dict[str, Path], bad: str) -> None:
    manifest = _write_slam(
        tmp_path, [("ok", str(broken_wavs["good"]), "fine"), ("broken", str(broken_wavs[bad]), "text")]
    )
    with pytest.raises(BadInputError, match=rf"{bad}\.wav.*user\.jsonl:2|user\.jsonl:2.*{bad}\.wav"):
        load_user_corpus(str(manifest), 16000)
    cuts, counts = load_user_corpus(str(manifest), 16000, skip_bad=True)
    assert [c.id for c in cuts] == ["ok"]
    assert sum(counts["skipped"].values()) == 1


@pytest.mark.parametrize("bad", ["corrupt", "empty"])
def test_bad_wav_in_lhotse_manifest(tmp_path: Path, broken_wavs: dict[str, Path], bad: str) -> None:
    good = _cut(broken_wavs["good"], "ok")
    if bad == "corrupt":  # a header lhotse cannot read: describe the file by hand
        rec = Recording(
            id="broken",
            sources=[AudioSource(type="file", channels=[0], source=str(broken_wavs["corrupt"]))],
            sampling_rate=16000,
            num_samples=16000,
            duration=1.0,
        )
        sup = SupervisionSegment(id="broken", recording_id="broken", start=0, duration=1.0, text="text")
        broken = MonoCut(id="broken", start=0, duration=1.0, channel=0, recording=rec, supervisions=[sup])
    else:
        broken = _cut(broken_wavs["empty"], "broken")
    manifest = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts([good, broken]).to_file(manifest)
    with pytest.raises(BadInputError, match=rf"{bad}\.wav.*cut broken"):
        load_user_corpus(str(manifest), 16000)
    cuts, counts = load_user_corpus(str(manifest), 16000, skip_bad=True)
    assert [c.id for c in cuts] == ["ok"]
    assert counts["skipped"] == {"bad_audio" if bad == "corrupt" else "empty_audio": 1}


def test_validation_rejects_blank_text_and_duplicates(tmp_path: Path, broken_wavs: dict[str, Path]) -> None:
    blank = _cut(broken_wavs["good"], "blank", text="  ")
    with pytest.raises(BadInputError, match="good.wav.*blank"):
        validate_cuts(CutSet.from_cuts([blank]), 16000)
    cut = _cut(broken_wavs["good"], "twice")
    with pytest.raises(BadInputError, match="duplicate cut id 'twice'"):
        validate_cuts([cut, cut], 16000, skip_bad=True)  # type: ignore[arg-type]


def test_recordings_supervisions_pair_and_prepare(tmp_path: Path, broken_wavs: dict[str, Path]) -> None:
    cut = _cut(broken_wavs["good"], "pair-1", text="a pair")
    rec_path, sup_path = tmp_path / "recordings.jsonl.gz", tmp_path / "supervisions.jsonl.gz"
    CutSet.from_cuts([cut]).decompose()[0].to_file(rec_path)
    CutSet.from_cuts([cut]).decompose()[1].to_file(sup_path)
    cfg = SlamConfig()
    cfg.corpus.dir = str(tmp_path / "corpus")
    cfg.corpus.num_utterances = 0  # no synthesis: only the user's sets
    cfg.corpus.real_sets = []
    cfg.corpus.user_manifests = {"mine": f"{sup_path},{rec_path}"}
    cfg.tracking.uri = f"sqlite:///{tmp_path / 'mlflow.db'}"  # prepare logs its counts to MLflow
    sets = prepare_corpus(cfg)
    assert list(sets) == ["mine"] and sets["mine"][0].supervisions[0].text == "a pair"
    stats = json.loads((tmp_path / "corpus" / "stats.json").read_text())
    assert stats["sets"]["mine"]["cuts"] == 1 and stats["sets"]["mine"]["speakers"] == 0
    assert [p.name for p in (tmp_path / "corpus").iterdir() if p.name.startswith(".")] == []
    assert len(CutSet.from_file(tmp_path / "corpus" / "mine.jsonl.gz")) == 1


def test_telephone_share_band_limits_a_seeded_share_and_survives_the_manifest(tmp_path):
    from lhotse import CutSet, Recording

    from slam.data.corpora import write_manifest
    from slam.data.corpora.channel import telephone_share

    noise = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    cuts = []
    for i in range(40):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, noise, 16000)
        cuts.append(Recording.from_file(path, recording_id=f"u{i}").to_cut())
    shared, changed = telephone_share(CutSet.from_cuts(cuts), 0.5, seed=0)
    again, _ = telephone_share(CutSet.from_cuts(reversed(cuts)), 0.5, seed=0)
    assert 10 <= changed <= 30 and sorted(c.id for c in shared) == sorted(c.id for c in cuts)
    narrow = {c.id for c in shared if c.recording.transforms}
    assert narrow == {c.id for c in again if c.recording.transforms} and len(narrow) == changed
    write_manifest(shared, tmp_path / "train.jsonl.gz")
    reread = {c.id: c for c in CutSet.from_file(tmp_path / "train.jsonl.gz")}

    def high_band_share(cut) -> float:  # energy above 4 kHz, the telephone band's edge
        spectrum = np.abs(np.fft.rfft(cut.load_audio()[0])) ** 2
        return float(spectrum[4200:].sum() / spectrum.sum())  # 1 Hz bins over 1 s

    some_narrow = next(iter(narrow))
    some_wide = next(c.id for c in cuts if c.id not in narrow)
    assert reread[some_narrow].load_audio().shape == (1, 16000)
    assert high_band_share(reread[some_narrow]) < 0.01 < 0.3 < high_band_share(reread[some_wide])


def test_speed_share_resamples_a_seeded_share_by_its_factors_and_survives_the_manifest(tmp_path):
    from lhotse import CutSet, Recording, SupervisionSegment

    from slam.data.corpora import write_manifest
    from slam.data.corpora.channel import speed_share

    tone = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32) * 0.5
    cuts = []
    for i in range(40):
        path = tmp_path / f"u{i}.wav"
        sf.write(path, tone, 16000)
        cut = Recording.from_file(path, recording_id=f"u{i}").to_cut()
        cut.supervisions = [SupervisionSegment(f"u{i}", f"u{i}", 0.0, 1.0, text="a tone")]
        cuts.append(cut)
    shared, changed = speed_share(CutSet.from_cuts(cuts), 0.5, [0.8, 1.25], seed=0)
    again, _ = speed_share(CutSet.from_cuts(reversed(cuts)), 0.5, [0.8, 1.25], seed=0)
    assert 10 <= changed <= 30 and sorted(c.id for c in shared) == sorted(c.id for c in cuts)
    durations = {c.id: c.duration for c in shared}
    assert durations == {c.id: c.duration for c in again}  # the same cuts, the same factors
    assert set(durations.values()) == {1.0, 1 / 0.8, 1 / 1.25}  # factor f: 1/f as long
    write_manifest(shared, tmp_path / "train.jsonl.gz")
    for cut in CutSet.from_file(tmp_path / "train.jsonl.gz"):
        audio = cut.load_audio()[0]
        assert audio.shape[0] == round(cut.duration * 16000)
        assert cut.supervisions[0].duration == pytest.approx(cut.duration)
        peak_hz = np.argmax(np.abs(np.fft.rfft(audio))) * 16000 / audio.shape[0]
        assert peak_hz == pytest.approx(440 / cut.duration, rel=0.02)  # faster: higher pitch


def test_join_sentences_reads_a_share_in_runs_keeping_every_sentence_in_order():
    from slam.data.corpora.text import join_sentences

    sentences = [f"sentence number {i}" + ("." if i % 2 else "") for i in range(3000)]
    joined = join_sentences(sentences, 0.4, 4, seed=1)
    assert joined == join_sentences(sentences, 0.4, 4, seed=1)
    assert " ".join(joined).replace(".", "") == " ".join(sentences).replace(".", "")  # all, in order
    runs = [u for u in joined if u.count("sentence") > 1]
    sizes = [u.count("sentence") for u in runs]
    assert set(sizes) == {2, 3, 4}
    assert 0.35 < sum(sizes) / len(sentences) < 0.45  # the share of sentences read in runs
    assert all(u.endswith(".") and ". sentence" in u for u in runs)  # a stop between sentences
    assert join_sentences(sentences, 0.0, 4, seed=1) == sentences


def test_held_out_voices_never_speak_a_training_sentence():
    from slam.config import ConfigError
    from slam.data.corpora.tts import TtsEngine, plan_renderings

    class Engine(TtsEngine):
        def pitch_range(self, voice: str) -> tuple[float, float]:
            return (100.0, 120.0)

    engines = {"a": (Engine(), ["v1", "v2", "v3"]), "b": (Engine(), ["w1", "w2"])}
    sentences = {split: [f"{split} sentence {i}" for i in range(300)] for split in ("train", "dev", "test")}
    jobs = plan_renderings(sentences, engines, seed=0, held_out=["b", "a:v2"])
    train = {j.speaker for j in jobs if j.split == "train"}
    assert train == {"a:v1", "a:v3"} and not any(j.held_out for j in jobs if j.split == "train")
    test = [j for j in jobs if j.split == "test"]
    assert {j.speaker for j in test if j.held_out} == {"b:w1", "b:w2", "a:v2"}
    assert all(j.held_out == (j.speaker in {"b:w1", "b:w2", "a:v2"}) for j in test)
    with pytest.raises(ConfigError, match="held_out_voices.*'c:x'"):
        plan_renderings(sentences, engines, seed=0, held_out=["c:x"])
    with pytest.raises(ConfigError, match="every installed voice"):
        plan_renderings(sentences, engines, seed=0, held_out=["a", "b"])


def test_engine_weights_set_each_engines_share_and_leave_the_unweighted_draw_alone():
    from slam.config import ConfigError
    from slam.data.corpora.tts import TtsEngine, plan_renderings

    class Engine(TtsEngine):
        def pitch_range(self, voice: str) -> tuple[float, float]:
            return (100.0, 120.0)

    engines = {"fast": (Engine(), ["v1"]), "slow": (Engine(), ["n1", "n2"])}
    sentences = {"train": [f"sentence {i}" for i in range(2000)]}
    plain = plan_renderings(sentences, engines, seed=0)
    assert plan_renderings(sentences, engines, seed=0, weights={}) == plain  # corpora made before stay
    share = sum(j.engine == "slow" for j in plain) / len(plain)
    assert 0.45 < share < 0.55
    weighted = plan_renderings(sentences, engines, seed=0, weights={"slow": 0.1})
    share = sum(j.engine == "slow" for j in weighted) / len(weighted)
    assert 0.06 < share < 0.13  # 0.1 / 1.1
    with pytest.raises(ConfigError, match="engine_weights.*'kokoro'"):
        plan_renderings(sentences, engines, seed=0, weights={"kokoro": 0.1})


def test_stage_outputs_are_the_same_bytes_when_rebuilt(tiny_cfg, monkeypatch) -> None:
    """A rerun on the same inputs writes the same files (so DVC sees no new outputs): manifests
    without gzip's write time; the cache's HDF5 (h5py stores no time stamps of its own here)."""
    import time

    from slam.data.cache import build_cache
    from slam.data.corpora import write_manifest

    cuts = CutSet.from_file(Path(tiny_cfg.corpus.dir) / "train.jsonl.gz")
    first, second = Path(tiny_cfg.corpus.dir) / "a.jsonl.gz", Path(tiny_cfg.corpus.dir) / "b.jsonl.gz"
    write_manifest(cuts, first)
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 3600)  # gzip would stamp this hour later
    write_manifest(cuts, second)
    monkeypatch.undo()
    assert first.read_bytes() == second.read_bytes()
    assert [c.id for c in CutSet.from_file(second)] == [c.id for c in cuts]

    cache = Path(tiny_cfg.cache.dir)
    build_cache(tiny_cfg)
    before = {p.name: p.read_bytes() for p in sorted(cache.iterdir()) if p.is_file()}
    shutil.rmtree(cache)
    time.sleep(1.1)  # a time stamp anywhere in the files would now differ
    build_cache(tiny_cfg)
    after = {p.name: p.read_bytes() for p in sorted(cache.iterdir()) if p.is_file()}
    assert any(name.endswith(".h5") for name in before)
    assert {n for n in before if before[n] != after.get(n)} == set()
