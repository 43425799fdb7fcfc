"""Sentences for the synthetic corpus: read, normalised to speakable English, split by hash.

The TTS engines are fed exactly the normalised text, so the transcript is what is spoken.
Normalisation therefore only has to produce text that every engine reads the same way:
plain ASCII words and light punctuation. Numbers are spelled out here (engines disagree on
"1984" or "$5"); anything whose reading is ambiguous (acronyms, initials, decimals, symbols,
markup) drops the whole sentence instead, since the pool is far larger than we need.

Sources (Debian packages): ``wordnet-base`` (example sentences quoted in the glosses) and
``fortunes`` (fortune cookie files, split into sentences); for ``corpus.message_utterances``
also the English messages of installed programs (their gettext catalogs' message ids:
"Failed to fetch some archives."); for ``corpus.spoken_form_utterances`` phrases of numbers,
dates, times, digit strings and the spelling alphabet, drawn from a small grammar.
"""

from __future__ import annotations

import functools
import gettext
import hashlib
import logging
import random
import re
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

WORDNET_DIR = Path("/usr/share/wordnet")  # Debian package wordnet-base
FORTUNES_DIR = Path("/usr/share/games/fortunes")  # Debian package fortunes
LOCALE_DIR = Path("/usr/share/locale")  # gettext catalogs: <lang>/LC_MESSAGES/<domain>.mo
SPLITS = ("train", "dev", "test")

# ----------------------------------------------------------------------------- numbers

_ONES = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen"
).split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_IRREGULAR = {
    "one": "first", "two": "second", "three": "third", "five": "fifth",
    "eight": "eighth", "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip


def _below_hundred(n: int) -> str:
    if n < 20:
        return _ONES[n]
    tens, ones = divmod(n, 10)
    return _TENS[tens] + (f"-{_ONES[ones]}" if ones else "")


def _below_thousand(n: int) -> str:
    hundreds, rest = divmod(n, 100)
    words = [f"{_ONES[hundreds]} hundred"] if hundreds else []
    if rest or not hundreds:
        words.append(_below_hundred(rest))
    return " ".join(words)


def number_to_words(n: int) -> str:
    """Cardinal English words for 0 <= n < 10**12, e.g. 1205 -> 'one thousand two hundred five'."""
    if not 0 <= n < 10**12:
        raise ValueError(f"cannot spell out {n}")
    if n < 1000:
        return _below_thousand(n)
    words = []
    for scale, name in _SCALES:
        if n >= scale:
            count, n = divmod(n, scale)
            words.append(f"{_below_thousand(count)} {name}")
    if n:
        words.append(_below_thousand(n))
    return " ".join(words)


def year_to_words(n: int) -> str:
    """Read 1100-1999 and 2010-2099 as years are spoken: 1984 -> 'nineteen eighty-four'."""
    if not (1100 <= n <= 1999 or 2010 <= n <= 2099):
        return number_to_words(n)
    century, rest = divmod(n, 100)
    if rest == 0:
        return f"{_below_hundred(century)} hundred"
    tail = f"oh {_ONES[rest]}" if rest < 10 else _below_hundred(rest)
    return f"{_below_hundred(century)} {tail}"


def ordinal_to_words(n: int) -> str:
    """Ordinal English words: 21 -> 'twenty-first'."""
    words = number_to_words(n)
    head, sep, last = words.rpartition(" ")
    base_head, dash, base = last.rpartition("-")
    if base in _ORDINAL_IRREGULAR:
        base = _ORDINAL_IRREGULAR[base]
    elif base.endswith("y"):
        base = base[:-1] + "ieth"
    else:
        base += "th"
    return f"{head}{sep}{base_head}{dash}{base}"


def spell_numbers(text: str) -> str | None:
    """Spell out the numbers of ``text``; ``None`` when one has no single obvious reading."""
    text = re.sub(r"\$(\d[\d,]*)\b", r"\1 dollars", text)
    text = re.sub(r"\b(\d[\d,]*)\s?%", r"\1 percent", text)
    if re.search(r"\d[.:/]\d|\d\.\d", text):  # decimals, times, dates, fractions
        return None

    def ordinal(match: re.Match[str]) -> str:
        return ordinal_to_words(int(match.group(1)))

    text = re.sub(r"\b(\d{1,6})(?:st|nd|rd|th)\b", ordinal, text)

    def cardinal(match: re.Match[str]) -> str:
        digits = match.group(0)
        value = int(digits.replace(",", ""))
        if "," not in digits and len(digits) == 4:
            return year_to_words(value)
        return number_to_words(value)

    # plain integers, optionally with thousands separators, not glued to letters
    text = re.sub(r"(?<![\w,])(?:\d{1,3}(?:,\d{3})+|\d{1,12})(?![\w])", cardinal, text)
    if re.search(r"\d", text):  # "4b", "3D", "MP3": glued to letters, ambiguous
        return None
    return text


# ---------------------------------------------------------------------- normalisation

_UNICODE_MAP = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201b": "'", "\u2032": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u00ab": '"', "\u00bb": '"',
        "\u2013": " -- ", "\u2014": " -- ", "\u2026": "...", "\u00a0": " ",
    }
)  # fmt: skip
# abbreviations every engine would read differently (or not at all)
_ABBREVIATIONS = {
    r"\bMr\.": "Mister", r"\bMrs\.": "Missus", r"\bDr\.": "Doctor", r"\bJr\.": "Junior",
    r"\bvs\.": "versus", r"\betc\.": "et cetera", r"\be\.g\.": "for example",
    r"\bi\.e\.": "that is",
}  # fmt: skip
# contractions whose leading apostrophe is part of the word
_LEADING_APOSTROPHE = {"'em", "'tis", "'twas", "'cause", "'til"}
_ALLOWED = re.compile(r"[A-Za-z ,.?!;'-]*")
_WORD = re.compile(r"[A-Za-z]")
_KEY_ASCII = frozenset("abcdefghijklmnopqrstuvwxyz0123456789'")  # what a sentence key keeps of ASCII


def _to_ascii(text: str) -> str | None:
    text = unicodedata.normalize("NFKD", text.translate(_UNICODE_MAP))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return text if text.isascii() else None


def _clean_token(token: str) -> str | None:
    """One whitespace token (a word with attached punctuation); ``None`` drops the sentence."""
    lead, core, trail = re.fullmatch(r"([,.?!;']*)(.*?)([,.?!;']*)", token).groups()  # type: ignore[union-attr]
    if lead.strip("'"):
        return None  # punctuation before a word ("?word", ",x") is markup or a typo
    if lead and ("'" + core).lower() in _LEADING_APOSTROPHE:
        core = "'" + core  # 'tis, 'em: the apostrophe belongs to the word, not a quote
    if trail.startswith("'") and core.lower().endswith("s"):
        core += "'"  # plural possessive (the dogs' bowls)
    trail = trail.replace("'", "")
    if not core:
        return trail
    if "." in core or core.startswith("-") or core.endswith("-") or not _WORD.search(core):
        return None  # "U.S", "a.m", dangling hyphens
    letters = core.replace("'", "").replace("-", "")
    if len(letters) >= 2 and not re.search(r"[aeiouyAEIOUY]", letters):
        return None  # "csh", "mph": lower-case acronyms, spelled or mangled
    if len(letters) >= 2 and letters.isupper():
        if len(letters) <= 3:
            return None  # acronym: spelled out by some engines, read as a word by others
        core = core.lower()  # SHOUTING in fortunes: an ordinary word
    return core + trail


def normalize_sentence(text: str) -> str | None:
    """Speakable form of one sentence, or ``None`` if it cannot be read unambiguously.

    >>> normalize_sentence('he paid $5 for the 1st ticket')
    'He paid five dollars for the first ticket.'
    """
    text = _to_ascii(text)
    if text is None or any(ch in text for ch in "`()[]{}<>:/\\|@#*_=+~^"):
        return None
    for pattern, expansion in _ABBREVIATIONS.items():
        text = re.sub(pattern, expansion, text)
    text = text.replace('"', " ").replace("&", " and ")
    text = re.sub(r"\s*(?:\.{2,}|--+)\s*", ", ", text)  # ellipses and dashes: a pause
    text = re.sub(r"\s+-\s+", ", ", text)
    text = spell_numbers(text)
    if text is None:
        return None
    if not _ALLOWED.fullmatch(text):
        return None
    tokens = []
    for token in text.split():
        cleaned = _clean_token(token)
        if cleaned is None:
            return None
        if cleaned:
            tokens.append(cleaned)
    text = " ".join(tokens)
    text = re.sub(r"\s+([,.?!;])", r"\1", text)
    text = re.sub(r"([,.?!;])[,.;]+", r"\1", text)  # ",," ", ." "!." -> first mark
    text = re.sub(r"([?!])[?!]+", r"\1", text)
    text = text.strip(" ,;")
    if not _WORD.search(text):
        return None
    if text[-1] not in ".?!":
        text += "."
    return text[0].upper() + text[1:]


def _other_script(ch: str) -> bool:
    """A letter of a script other than Latin (Cyrillic, Greek, ...): a key keeps it whole.
    Latin letters outside ASCII ("é") stay dropped as they always were, so the keys, splits and
    word counts of English and French text are what they were before other scripts came."""
    return ch.isalpha() and not ch.isascii() and not unicodedata.name(ch, "LATIN").startswith("LATIN")


def count_words(text: str) -> int:
    return sum(1 for token in text.split() if _WORD.search(token) or any(map(_other_script, token)))


def sentence_key(text: str) -> str:
    """Case- and punctuation-blind identity of a sentence (for dedup and the split hash):
    ASCII letters, digits and apostrophes, and the letters of non-Latin scripts."""
    kept = (ch if ch in _KEY_ASCII or _other_script(ch) else " " for ch in text.lower())
    return " ".join("".join(kept).split())


def stable_rng(*parts: object) -> random.Random:
    """A generator seeded by a hash of ``parts`` (Python's ``hash`` is salted per process): the
    same draws for the same sentence and seed on every run and machine, whatever the order."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def split_of(text: str, dev_fraction: float, test_fraction: float, seed: int | None = None) -> str:
    """``train``/``dev``/``test`` from a stable hash of the sentence (never Python's ``hash``).

    Depends on the sentence only (and ``seed``, if given), not on the pool: the same sentence
    lands in the same set on every run and machine, so no sentence ever crosses sets. The
    synthetic sentences take no seed; a real prompt set's split (slam.data.corpora.asterisk)
    does, so another seed is another draw of its few hundred texts.
    """
    key = sentence_key(text)
    return split_of_key(key if seed is None else f"{seed}:{key}", dev_fraction, test_fraction)


def held_out_split(text: str, dev_fraction: float) -> str:
    """``dev`` or ``test`` for a prompt of a real (test) set: about ``dev_fraction`` of the
    prompt texts are held out as its dev part (``corpus.real_dev_fraction``)."""
    return "dev" if split_of(text, dev_fraction, 0.0) == "dev" else "test"


def split_of_key(key: str, dev_fraction: float, test_fraction: float) -> str:
    """``train``/``dev``/``test`` from a stable hash of any identity string (a sentence key,
    a scene key): the same key lands in the same set on every run and machine."""
    u = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + dev_fraction:
        return "dev"
    return "train"


# ------------------------------------------------------------------------------ sources


def wordnet_examples(wordnet_dir: Path = WORDNET_DIR) -> Iterator[str]:
    """Example sentences quoted in WordNet glosses (``gloss; "example"; "example"``)."""
    for pos in ("noun", "verb", "adj", "adv"):
        path = wordnet_dir / f"data.{pos}"
        with path.open(encoding="latin-1") as f:
            for line in f:
                if line.startswith("  ") or " | " not in line:  # licence header
                    continue
                gloss = line.split(" | ", 1)[1]
                yield from re.findall(r'"([^"]+)"', gloss)


def _fortune_files(fortunes_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in fortunes_dir.iterdir()
        if p.is_file() and not p.is_symlink() and p.suffix not in (".dat", ".u8")
    )


def fortune_sentences(fortunes_dir: Path = FORTUNES_DIR) -> Iterator[str]:
    """Sentences of the fortune cookies, attributions ("-- Author") removed."""
    for path in _fortune_files(fortunes_dir):
        text = path.read_text(encoding="utf-8", errors="replace")
        for fortune in re.split(r"^%\s*$", text, flags=re.MULTILINE):
            lines = [ln for ln in fortune.splitlines() if not ln.strip().startswith("--")]
            body = " ".join(" ".join(lines).split())
            # initials ("R. A. Heinlein") break sentence splitting and have no single reading
            if not body or re.search(r"\b[A-HJ-Z]\.\s", body):
                continue
            # a sentence ends at . ! or ? followed by a capital; not at an ellipsis
            yield from re.split(r"(?<=[.!?])(?<!\.\.)\s+(?=[\"'(]*[A-Z])", body)


@functools.lru_cache(maxsize=4)
def _normalized_sources(wordnet_dir: Path, fortunes_dir: Path) -> tuple[str, ...]:
    missing = [
        f"{d} (Debian package {pkg})"
        for d, pkg in ((wordnet_dir, "wordnet-base"), (fortunes_dir, "fortunes"))
        if not d.is_dir()
    ]
    if missing:
        raise FileNotFoundError("sentence sources not installed: " + ", ".join(missing))
    out = []
    for raw in _chain(wordnet_examples(wordnet_dir), fortune_sentences(fortunes_dir)):
        text = normalize_sentence(raw)
        if text is not None:
            out.append(text)
    return tuple(out)


def _chain(*iterables: Iterable[str]) -> Iterator[str]:
    for iterable in iterables:
        yield from iterable


def distinct_sentences(texts: Iterable[str | None], min_words: int, max_words: int) -> list[str]:
    """The first of each sentence (by :func:`sentence_key`) among ``texts`` that has
    ``min_words..max_words`` words, in their order (``None``: a text normalisation dropped)."""
    seen: set[str] = set()
    kept = []
    for text in texts:
        if text is None or not min_words <= count_words(text) <= max_words:
            continue
        key = sentence_key(text)
        if key not in seen:
            seen.add(key)
            kept.append(text)
    return kept


def sentence_pool(
    min_words: int,
    max_words: int,
    seed: int,
    wordnet_dir: Path = WORDNET_DIR,
    fortunes_dir: Path = FORTUNES_DIR,
) -> list[str]:
    """All usable distinct sentences of ``min_words..max_words`` words, shuffled by ``seed``."""
    pool = distinct_sentences(_normalized_sources(wordnet_dir, fortunes_dir), min_words, max_words)
    random.Random(seed).shuffle(pool)
    log.info("sentence pool: %d distinct sentences of %d-%d words", len(pool), min_words, max_words)
    return pool


def short_sentences(
    count: int, below: int, dev_fraction: float, test_fraction: float, seed: int
) -> list[str]:
    """``count`` distinct training-split sentences of 1..``below``-1 words (fewer if the sources
    hold fewer), for ``corpus.short_utterances``: none of them can be in dev or test."""
    if count <= 0 or below <= 1:
        return []
    pool = sentence_pool(1, below - 1, seed)
    chosen = [s for s in pool if split_of(s, dev_fraction, test_fraction) == "train"][:count]
    if len(chosen) < count:
        log.warning("corpus.short_utterances=%d: only %d short training sentences", count, len(chosen))
    return chosen


# words of letters (any script's), joined by spaces, apostrophes, sentence punctuation or
# single hyphens ("arrière-plan", not "--help")
_SPEAKABLE = re.compile(r"^[^\W\d_]+(?:(?:[' ,.?!]+|-)[^\W\d_]+)*[ .?!]*$")
_ACRONYM = re.compile(r"\b[^\W\d_]*[A-Z][^\W\d_]*[A-Z]")  # "OCSP", "GnuPG": spelt, not spoken


def speakable(text: str) -> bool:
    """Whether a message reads aloud one way: words and punctuation, no codes or acronyms.

    >>> speakable("Impossible de lire le fichier."), speakable("%s: fichier introuvable")
    (True, False)
    """
    return bool(_SPEAKABLE.match(text)) and not _ACRONYM.search(text)


def catalog_messages(path: Path) -> dict[str, str]:
    """Message id -> translation of one GNU ``.mo`` catalog (the header and plural forms left
    out; typographic apostrophes made plain)."""
    with path.open("rb") as f:
        catalog = gettext.GNUTranslations(f)._catalog  # the stdlib's parsed msgid -> msgstr
    return {
        k.strip().replace("\u2019", "'"): v.strip().replace("\u2019", "'")
        for k, v in catalog.items()
        if isinstance(k, str) and k and isinstance(v, str)
    }


def message_sentences(
    count: int, catalogs: Iterable[str], min_words: int, max_words: int, dev_fraction: float,
    test_fraction: float, seed: int, locale_dir: Path = LOCALE_DIR,
) -> list[str]:  # fmt: skip
    """``count`` distinct training-split English messages of the gettext ``catalogs`` (domain
    names; the message ids of every locale that translates them), ``min_words..max_words``
    words, normalised as the other sentences and shuffled by ``seed``; for
    ``corpus.message_utterances``: software messages are closer to spoken system prompts
    ("Invalid password.") than glosses and fortunes are. None can be in dev or test."""
    if count <= 0:
        return []
    catalogs = list(catalogs)
    if not catalogs:
        raise ValueError(f"corpus.message_utterances={count} reads the messages of corpus.catalogs, which is "
                         "empty: name gettext domains, e.g. [git, coreutils, apt]")  # fmt: skip
    found: set[str] = set()
    for domain in catalogs:
        paths = sorted(locale_dir.glob(f"*/LC_MESSAGES/{domain}.mo"))
        if not paths:
            log.warning("gettext catalog %s: in no locale under %s; skipped", domain, locale_dir)
        for path in paths:
            try:
                found.update(m for m in catalog_messages(path) if speakable(m))
            except Exception as error:  # the stdlib parser fails on some locales' headers; the others remain
                log.warning("gettext catalog %s unreadable (%s); skipped", path, error)
    texts = distinct_sentences(map(normalize_sentence, sorted(found)), min_words, max_words)
    pool = [text for text in texts if split_of(text, dev_fraction, test_fraction) == "train"]
    random.Random(seed).shuffle(pool)
    if len(pool) < count:
        log.warning("corpus.message_utterances=%d: only %d training messages", count, len(pool))
    log.info("messages: %d of %d training messages of %d-%d words", min(count, len(pool)), len(pool),
             min_words, max_words)  # fmt: skip
    return pool[:count]


# --------------------------------------------------------------------------- spoken forms

WEEKDAYS = "Monday Tuesday Wednesday Thursday Friday Saturday Sunday".split()
MONTHS = "January February March April May June July August September October November December".split()
# the ICAO/NATO spelling alphabet, as English writes it
SPELLING_ALPHABET = (
    "Alpha Bravo Charlie Delta Echo Foxtrot Golf Hotel India Juliet Kilo Lima Mike November "
    "Oscar Papa Quebec Romeo Sierra Tango Uniform Victor Whiskey X-ray Yankee Zulu"
).split()
_DIGITS = _ONES[:10]


def _spoken_cardinal(rng: random.Random) -> str:
    # small numbers most often, as speech has them; up to the billions now and then
    n = rng.choice([rng.randint(0, 100), rng.randint(100, 9999), int(10 ** rng.uniform(4, 9.5))])
    return number_to_words(n)


def _spoken_ordinal(rng: random.Random) -> str:
    n = rng.choice([rng.randint(1, 31), rng.randint(1, 100), rng.randint(100, 1000)])
    return rng.choice(["", "the "]) + ordinal_to_words(n)


def _spoken_date(rng: random.Random) -> str:
    day, month = ordinal_to_words(rng.randint(1, 31)), rng.choice(MONTHS)
    year = year_to_words(rng.randint(1900, 2099))
    weekday = rng.choice(WEEKDAYS)
    return rng.choice([
        f"{month} {day}", f"{month} the {day}", f"the {day} of {month}", f"{weekday}, {month} {day}",
        f"{weekday} the {day}", f"{month} {day}, {year}", f"{month} {year}", f"{weekday}", f"{month}",
        f"next {weekday}", f"last {weekday}", f"{weekday} morning", f"{weekday} afternoon",
    ])  # fmt: skip


def _spoken_time(rng: random.Random) -> str:
    hour, minute = number_to_words(rng.randint(1, 12)), rng.randint(1, 59)
    minutes = f"oh {_DIGITS[minute]}" if minute < 10 else number_to_words(minute)
    return rng.choice([
        f"{hour} o'clock", f"half past {hour}", f"a quarter past {hour}", f"a quarter to {hour}",
        f"{hour} {minutes}", f"{number_to_words(minute)} minutes past {hour}",
        f"{number_to_words(minute)} minutes", f"{number_to_words(rng.randint(2, 59))} seconds",
    ])  # fmt: skip


def _spoken_digits(rng: random.Random) -> str:
    # a phone number, an extension or a code read digit by digit ("oh" or "zero" for 0)
    zero = rng.choice(["zero", "oh"])
    digits = [_DIGITS[rng.randint(0, 9)] for _ in range(rng.randint(2, 7))]
    return " ".join(zero if d == "zero" else d for d in digits)


def _spoken_spelling(rng: random.Random) -> str:
    return " ".join(rng.choice(SPELLING_ALPHABET) for _ in range(rng.randint(1, 4)))


# what spoken_forms draws from, one kind per utterance, each as likely
SPOKEN_FORMS = (_spoken_cardinal, _spoken_ordinal, _spoken_date, _spoken_time, _spoken_digits,
                _spoken_spelling)


def spoken_forms(count: int, dev_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """``count`` distinct training-split phrases of how numbers, dates, times, digit strings and
    the spelling alphabet are said ("The twenty-first.", "March the third, nineteen oh five.",
    "Four one five two.", "Sierra Tango."), drawn by ``seed``; for
    ``corpus.spoken_form_utterances``: a phone system says these one or two words at a time,
    and the sentence sources hardly ever do. None can be in dev or test."""
    rng = random.Random(seed)
    chosen: dict[str, str] = {}
    for _ in range(50 * count):  # the phrase space is large; the bound only ends a tiny one
        if len(chosen) >= count:
            break
        words = rng.choice(SPOKEN_FORMS)(rng)
        text = words[0].upper() + words[1:] + "."
        key = sentence_key(text)
        if key not in chosen and split_of(text, dev_fraction, test_fraction) == "train":
            chosen[key] = text
    if len(chosen) < count:
        log.warning("corpus.spoken_form_utterances=%d: only %d distinct training phrases", count, len(chosen))
    return list(chosen.values())


def join_sentences(sentences: list[str], fraction: float, most: int, seed: int) -> list[str]:
    """The sentences with a seeded ``fraction`` of them read as runs of 2..``most`` in one
    utterance ("First one. Second one."): the same text in fewer, longer utterances, for real
    prompts that run past one sentence (a third of asterisk_en's words are in clips over 6 s,
    longer than any single-sentence utterance). A sentence without a closing mark gets a full
    stop, so the voice pauses where a reader would."""
    if fraction <= 0 or most < 2:
        return list(sentences)
    rng = random.Random(seed)
    # a run starts with probability p and takes (2 + most) / 2 sentences on average: the p
    # that puts ``fraction`` of the sentences in runs
    mean_run = (2 + most) / 2
    p = fraction / (mean_run * (1 - fraction) + fraction)
    out: list[str] = []
    i = 0
    while i < len(sentences):
        if rng.random() < p:
            n = min(rng.randint(2, most), len(sentences) - i)
            run = [s if s[-1] in ".!?" else s + "." for s in sentences[i : i + n]]
            out.append(" ".join(run))
            i += n
        else:
            out.append(sentences[i])
            i += 1
    return out


def pick_sentences(
    pool: list[str], num_utterances: int, dev_fraction: float, test_fraction: float,
    splits: Iterable[str] = SPLITS,
) -> dict[str, list[str]]:  # fmt: skip
    """Sentences to render per split, ``num_utterances`` in total over ``SPLITS``.

    Each split takes its share in pool order, every sentence once; only if a split's part of
    the pool is exhausted are sentences repeated (rendered again with another voice).
    Splits not in ``splits`` are left out (a user's own set replaces them).
    """
    wanted = {"test": round(num_utterances * test_fraction), "dev": round(num_utterances * dev_fraction)}
    wanted["train"] = num_utterances - wanted["test"] - wanted["dev"]
    if wanted["train"] < 0:
        raise ValueError("dev_fraction + test_fraction must not exceed 1")
    by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
    for text in pool:
        by_split[split_of(text, dev_fraction, test_fraction)].append(text)
    chosen = {}
    for split in splits:
        candidates, n = by_split[split], wanted[split]
        if n and not candidates:
            raise ValueError(f"no sentences hash into {split!r}; raise its fraction")
        if n > len(candidates):
            log.warning("%s: %d sentences for %d utterances, some rendered twice", split, len(candidates), n)
        chosen[split] = [candidates[i % len(candidates)] for i in range(n)]
    return chosen
