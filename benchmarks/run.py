"""Run the benchmarks: ``python -m benchmarks.run`` (or ``python benchmarks/run.py``).

Writes ``benchmarks/results.json`` and ``benchmarks/results.md``. Each measurement runs in a
fresh process (``--worker``), so that one measurement's memory peak, allocator state or
oneDNN kernel cache cannot leak into the next. The probes (peak memory, OpenMP settings) need
a process of their own by nature and always get one. A failing measurement is recorded under
``errors`` and the others still run.

OpenMP: with the default wait policy, torch's worker threads spin at every barrier; on a
machine whose cores other jobs also use, a step of thousands of small ops then waits for
descheduled threads at every op and runs several times slower, and the noise swamps every
comparison; on an idle machine the default is the faster one. So by default (``auto``) the
workers keep the default policy, as the pipelines run, unless the load average exceeds the core
count when the run starts, then they use ``OMP_WAIT_POLICY=PASSIVE``; the ``threads`` probes measure what the
policy and the thread count do either way.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never the Hugging Face hub
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from benchmarks import measures  # noqa: E402
from benchmarks.env import REPO, SMOKE, Env, load_env, loadavg, machine  # noqa: E402
from benchmarks.report import render  # noqa: E402

BENCHMARKS: dict[str, Callable[[Env], dict[str, Any]]] = {
    "padding": measures.bench_padding,
    "whisper": measures.bench_whisper,
    "training": measures.bench_training,
    "profile": measures.bench_profile,
    "decode": measures.bench_decode,
    "hot_paths": measures.bench_hot_paths,
}
# Probes, each in a fresh process: name -> OMP_WAIT_POLICY for it ("inherit": the main setting;
# None: unset, libgomp's default).
PROBES: dict[str, str | None] = {
    **{f"memory:{p}": "inherit" for p in measures.MEMORY_PROBES},
    "threads:default": None, "threads:passive": "PASSIVE",
}
SMOKE_PROBES = ["memory:train_cached", "memory:decode_greedy", "threads:default"]
WORKER_TIMEOUT = 900  # seconds; a hung worker must not hang the whole run
# Seconds after a worker starts past which its loops stop (once their minimum is measured), so
# that the run stays near 15 minutes even when other jobs load the machine; unlisted: no limit.
BUDGETS = {"whisper": 80.0, "training": 150.0, "decode": 150.0, "hot_paths": 120.0}


def quiet() -> None:
    """Progress bars and load warnings would bury the log."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore")
    logging.getLogger("lhotse").setLevel(logging.ERROR)


def run_one(name: str, env: Env) -> dict[str, Any]:
    """One benchmark or probe in this process: its sections, notes and cost."""
    from slam.utils import setup_runtime

    quiet()
    setup_runtime(env.cfg.runtime)  # threads as the stages set them
    start = time.perf_counter()
    kind, _, arg = name.partition(":")
    if kind == "memory":
        sections = {"probe": measures.memory_probe(env, arg)}
    elif kind == "threads":
        sections = {"probe": measures.threads_probe(env, against_one_thread=arg == "default")}
    else:
        sections = BENCHMARKS[name](env)
    return {"sections": sections, "notes": env.notes, "seconds": time.perf_counter() - start}


def spawn(name: str, env_file: Path, omp_wait_policy: str | None) -> dict[str, Any]:
    """``run_one`` in a fresh interpreter, with this OpenMP wait policy (None: unset)."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        out = Path(f.name)
    cmd = [sys.executable, "-m", "benchmarks.run", "--worker", name, "--env", str(env_file),
           "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("OMP_WAIT_POLICY", None)
    if omp_wait_policy is not None:
        env["OMP_WAIT_POLICY"] = omp_wait_policy
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=WORKER_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"worker {name} timed out after {WORKER_TIMEOUT} s") from None
    if proc.returncode != 0:
        raise RuntimeError(f"worker {name} failed:\n{proc.stderr[-3000:]}")
    try:
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def run_benchmarks(env: Env, only: list[str] | None = None, isolate: bool = True,
                   probes: list[str] | None = None, omp_wait_policy: str | None = None,
                   parallel_probes: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every benchmark (or ``only`` those) and the probes (``probes``: a subset of PROBES).

    ``isolate=False`` runs the benchmarks in this process (tests); ``parallel_probes`` runs the
    probes side by side, which keeps their memory apart but spoils their timings (tests).
    """
    start = time.perf_counter()
    names = [n for n in BENCHMARKS if only is None or n in only]
    probes = [p for p in (probes if probes is not None else PROBES)
              if only is None or p.split(":")[0] in only]
    env_file = Path(env.work) / "env.json"
    env_file.parent.mkdir(parents=True, exist_ok=True)
    load = loadavg()
    if busy():
        env.notes.insert(0, f"the machine was busy when the run started (load average {load[0]} on "
                            f"{os.cpu_count()} cores): absolute times are inflated and noisy; the ratios "
                            "pair their two sides item by item and training takes the best of repeated runs")
    results: dict[str, Any] = {
        "schema": 1, "mode": "smoke" if env.sizes == SMOKE else "full",
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {**machine(), "omp_wait_policy": omp_wait_policy or "default"},
        "load_average": {"start": load},
        "assets": describe_assets(env), "sizes": env.to_json()["sizes"],
        "benchmarks": {}, "seconds": {}, "errors": {}, "notes": list(env.notes),
    }
    if env.cfg.runtime.threads > 0:  # the workers set it (slam.utils.setup_runtime)
        results["machine"]["torch_threads"] = env.cfg.runtime.threads

    def collect(name: str, done: dict[str, Any]) -> None:
        results["seconds"][name] = round(done["seconds"], 1)
        for note in done["notes"]:
            if note not in results["notes"]:
                results["notes"].append(note)

    def failed(name: str, exc: Exception) -> None:
        results["errors"][name] = "".join(traceback.format_exception_only(exc)).strip()
        log(f"[bench] {name} FAILED: {results['errors'][name][-500:]}")

    for name in names:
        log(f"[bench] {name} ...")
        env.deadline = time.time() + BUDGETS[name] if name in BUDGETS else 0.0
        env_file.write_text(json.dumps(env.to_json()))
        try:
            done = spawn(name, env_file, omp_wait_policy) if isolate else run_one(name, env)
        except Exception as exc:  # keep going: one broken measurement must not lose the others
            failed(name, exc)
            continue
        collect(name, done)
        results["benchmarks"].update(done["sections"])
        log(f"[bench] {name} done in {done['seconds']:.0f} s")

    env.deadline = 0.0
    env_file.write_text(json.dumps(env.to_json()))
    probe_out: dict[str, dict[str, Any]] = {"memory": {}, "threads": {}}

    def probe(name: str) -> tuple[str, dict[str, Any] | Exception]:
        policy = PROBES[name]
        try:
            return name, spawn(name, env_file, omp_wait_policy if policy == "inherit" else policy)
        except Exception as exc:
            return name, exc

    log(f"[bench] probes {', '.join(probes)} ...")
    with ThreadPoolExecutor(max_workers=len(probes) if parallel_probes else 1) as pool:
        for name, done in pool.map(probe, probes):
            if isinstance(done, Exception):
                failed(name, done)
                continue
            collect(name, done)
            kind, _, arg = name.partition(":")
            probe_out[kind][arg] = done["sections"]["probe"]
            log(f"[bench] {name} done in {done['seconds']:.0f} s")
    if probe_out["memory"]:
        results["benchmarks"].update(measures.memory_section(probe_out["memory"]))
    if probe_out["threads"]:
        results["benchmarks"].update(measures.threads_section(probe_out["threads"]))
    results["load_average"]["end"] = loadavg()
    results["total_seconds"] = round(time.perf_counter() - start, 1)
    return results


def busy(share: float = 0.5) -> bool:
    """Is the 1-minute load average above ``share`` of the cores?"""
    load = loadavg()
    return bool(load) and load[0] > share * (os.cpu_count() or 1)


def wait_policy(choice: str, env: Env) -> str | None:
    """The OMP_WAIT_POLICY for the workers (None: unset); ``auto`` decides on the current load."""
    if choice == "auto":
        # Measured here: at a load of ~1 on 2 cores the default policy is still the faster one;
        # at ~4 it makes steps 5-10x slower and passive waiting avoids that.
        if not busy(share=1.0):
            return None
        env.notes.append("the workers ran with OMP_WAIT_POLICY=PASSIVE (--omp-wait-policy auto, as the load "
                         "exceeded the cores), lest spinning OpenMP threads swamp the comparisons; the "
                         "threads rows show what the policy costs or saves")
        return "PASSIVE"
    return None if choice == "default" else choice


def describe_assets(env: Env) -> dict[str, Any]:
    cfg = env.cfg
    targets = "/".join(cfg.peft.target_modules)
    summary = (f"encoder {cfg.encoder.path}, LLM {cfg.llm.path}, projector {cfg.projector.name} "
               f"k={cfg.projector.k}, {cfg.peft.method} r={cfg.peft.r} on {targets}, "
               f"corpus {cfg.corpus.dir}, cache {cfg.cache.dir}, trained model {env.assets or 'none'}")
    return {"kind": env.kind, "summary": summary, "trained_model": env.assets}


def merge_results(previous_path: Path, new: dict[str, Any]) -> dict[str, Any]:
    """The previous results with ``new``'s sections in place of theirs. Every ratio is still
    measured within one run; ``measured`` says which run (time, load) each section comes from."""
    if not previous_path.exists():
        return new
    merged = json.loads(previous_path.read_text())
    stamp = {"created": merged.get("created"), "load_average": merged.get("load_average")}
    measured = merged.setdefault("measured", {})
    for name in merged["benchmarks"]:
        measured.setdefault(name, stamp)
    for name, section in new["benchmarks"].items():
        merged["benchmarks"][name] = section
        measured[name] = {"created": new.get("created"), "load_average": new.get("load_average")}
    merged["errors"] = {**merged.get("errors", {}), **new["errors"]}
    merged["notes"] = list(dict.fromkeys([*merged.get("notes", []), *new.get("notes", [])]))
    return merged


def write_results(results: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "results.json", out_dir / "results.md"
    json_path.write_text(json.dumps(results, indent=2, default=float) + "\n")
    md_path.write_text(render(results))
    return json_path, md_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes (tests); figures mean nothing")
    parser.add_argument("--only", default="",
                        help=f"comma list of {', '.join([*BENCHMARKS, 'memory', 'threads'])}")
    parser.add_argument("--merge", action="store_true",
                        help="with --only: replace those sections in the existing results, keep the others "
                             "(each section records when and under what load it was measured)")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out-dir", default=str(REPO / "benchmarks"))
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (runtime.threads; default: params.yaml's, 0 = torch's default)")
    parser.add_argument("--omp-wait-policy", default="auto", choices=["auto", "PASSIVE", "ACTIVE", "default"],
                        help="OMP_WAIT_POLICY of the benchmark workers: 'default' leaves it unset, 'auto' "
                             "(the default) sets PASSIVE only if the load exceeds the cores at the start")
    parser.add_argument("--in-process", action="store_true", help="benchmarks in this process (not probes)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--env", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:  # a fresh process for one measurement
        env = Env.from_json(json.loads(Path(args.env).read_text()))
        Path(args.out).write_text(json.dumps(run_one(args.worker, env), default=float))
        return 0
    params = Path(args.params).resolve()
    os.chdir(REPO)  # the DVC outputs named in params.yaml are relative to the repository
    quiet()
    env = load_env(params, smoke=args.smoke)
    if args.threads is not None:
        env.cfg.runtime.threads = args.threads
    for note in env.notes:
        print(f"[bench] note: {note}")
    only = [x for x in args.only.split(",") if x] or None
    results = run_benchmarks(env, only=only, isolate=not args.in_process,
                             omp_wait_policy=wait_policy(args.omp_wait_policy, env))
    if args.merge:
        results = merge_results(Path(args.out_dir) / "results.json", results)
    json_path, md_path = write_results(results, Path(args.out_dir))
    print(md_path.read_text())
    print(f"[bench] wrote {json_path} and {md_path} in {results['total_seconds'] / 60:.1f} min")
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
