#!/usr/bin/env bash
# One experiment in a scratch clone, in the background, so the checkout you work in stays free:
#
#   scripts/scratch_run.sh NAME [override ...]      e.g.  scripts/scratch_run.sh ENC2 train.encoder_layers=2
#
# Clones this checkout's HEAD (commit first) to $SCRATCH/run_NAME (default /tmp), links in the
# models, corpus and encoder cache this checkout has already built (hard links: no copy; DVC then
# skips every stage whose inputs the overrides leave alone; a stage that reruns replaces its
# outputs, it does not write into the linked files), composes params.yaml with the overrides
# (Hydra syntax, as `python -m slam.compose` takes them) and runs `dvc repro $TARGET` with the
# clone's own code on $THREADS torch threads (default 1: two runs share two cores), logging to
# $SCRATCH/run_NAME.log.
set -euo pipefail
[ $# -ge 1 ] || { sed -n 2,12p "$0"; exit 2; }
name=$1
shift
repo=$(git rev-parse --show-toplevel)
scratch=${SCRATCH:-/tmp}
dir=$scratch/run_$name
threads=${THREADS:-1}
[ ! -e "$dir" ] || { echo "$dir exists: pick another name or remove it" >&2; exit 1; }
git clone -q "$repo" "$dir"
for out in models llms data/asr/corpus data/asr/cache; do
    if [ -e "$repo/$out" ]; then
        mkdir -p "$dir/$(dirname "$out")"
        cp -al "$repo/$out" "$dir/$out"
    fi
done
cd "$dir"
export PATH="$repo/.venv/bin:$PATH" PYTHONPATH="$dir" OMP_NUM_THREADS="$threads"
python -m slam.compose "$@" runtime.threads="$threads"
setsid nohup dvc repro ${TARGET:-} > "$scratch/run_$name.log" 2>&1 < /dev/null &
echo "$name: $dir, log $scratch/run_$name.log"
