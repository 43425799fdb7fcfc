#!/usr/bin/env bash
# One experiment in a scratch clone, in the background, so the checkout you work in stays free:
#
#   scripts/scratch_run.sh NAME [override ...]      e.g.  scripts/scratch_run.sh ENC2 train.encoder_layers=2
#
# Clones this checkout's HEAD (commit first) to $SCRATCH/run_NAME (default /tmp) with this
# checkout's DVC cache as its own (a DVC shared cache, files linked, not copied), so every stage
# output this checkout has built (models, corpus, encoder cache) is checked out at once and DVC
# skips every stage whose inputs the overrides leave alone. Then composes params.yaml with the
# overrides (Hydra syntax, as `python -m slam.compose` takes them) and runs `dvc repro $TARGET`
# with the clone's own code on $THREADS torch threads (default 1: two runs share two cores),
# logging to $SCRATCH/run_NAME.log. RESUME_FROM=<checkpoint dir> continues that checkpoint under
# the overrides' config (scripts/adopt_checkpoint.py), e.g. 1000 more steps of a trained run:
#   RESUME_FROM=exp/asr/checkpoints/step-0002000 scripts/scratch_run.sh EXT train.max_steps=3000 \
#     'train.lr_restarts=[1000,2000]'
# LOCK_FROM=<another run's clone> starts from that run's dvc.lock, so the outputs it built on this
# machine (corpus, encoder cache) are reused instead of remade when the committed lock names
# outputs the cache lacks (a fresh machine: the committed default's outputs are not in its cache).
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,18p "$0"; exit 2; }
name=$1
shift
repo=$(git rev-parse --show-toplevel)
scratch=${SCRATCH:-/tmp}
dir=$scratch/run_$name
threads=${THREADS:-1}
[ ! -e "$dir" ] || { echo "$dir exists: pick another name or remove it" >&2; exit 1; }
git clone -q "$repo" "$dir"
cd "$dir"
[ -z "${LOCK_FROM:-}" ] || cp "$LOCK_FROM/dvc.lock" dvc.lock
export PATH="$repo/.venv/bin:$PATH" PYTHONPATH="$dir" OMP_NUM_THREADS="$threads"
dvc cache dir --local "$repo/.dvc/cache"
dvc config --local cache.type hardlink,symlink  # linked from the shared cache, read-only
dvc checkout --quiet || true  # outputs the cache lacks are left to the stages that make them
python -m slam.compose "$@" runtime.threads="$threads"
[ -z "${RESUME_FROM:-}" ] || python scripts/adopt_checkpoint.py "$(cd "$repo" && realpath "$RESUME_FROM")"
setsid nohup dvc repro ${TARGET:-} > "$scratch/run_$name.log" 2>&1 < /dev/null &
echo "$name: $dir, log $scratch/run_$name.log"
