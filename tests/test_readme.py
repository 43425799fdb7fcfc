"""The README and docs/ name only paths that exist in a fresh clone (links and `code` paths)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# folders git holds; data/, exp/, models/ and llms/ are pipeline outputs, absent from a fresh clone
TRACKED = ("pipelines/", "slam/", "params/", "metrics/", "docs/", "tests/", "benchmarks/", "tables/",
           "scripts/")
PLACEHOLDER = re.compile(r"[<>*{}$ ]")


def named_paths(page: Path) -> list[tuple[str, Path]]:
    """(as written, resolved) for every markdown link to a file and every `code` span that
    starts with a tracked folder."""
    text = page.read_text()
    found = []
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith(("http://", "https://")):
            found.append((target, (page.parent / target).resolve()))
    for span in re.findall(r"`([^`\n]+)`", text):
        if span.startswith(TRACKED) and not PLACEHOLDER.search(span):
            found.append((span, ROOT / span.split("#")[0].split(":")[0]))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_named_path_exists(page: Path) -> None:
    missing = [written for written, path in named_paths(page) if not path.exists()]
    assert missing == [], f"{page.relative_to(ROOT)} names paths that do not exist: {missing}"


def test_the_readme_is_a_front_door() -> None:
    """Short enough to read in minutes; every page in docs/ reachable from it."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for page in PAGES[1:]:
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"
