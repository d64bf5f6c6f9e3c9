"""Every relative link of README.md and docs/ leads to a file of the repository, and every
``#anchor`` to a heading of the page it names: the contract lives in the repository, so a link
out of it, or to a section that was renamed, is a broken contract."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _prose(page: Path) -> str:
    return FENCE.sub("", page.read_text(encoding="utf-8"))


def _anchors(page: Path) -> set[str]:
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.*)$", _prose(page), re.MULTILINE)}


def _broken(page: Path) -> list[str]:
    broken = []
    for target in LINK.findall(_prose(page)):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.is_relative_to(ROOT) or not dest.exists():
            broken.append(f"{target}: not a file of the repository")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target}: no such heading")
    return broken


def test_relative_links_resolve() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    broken = {str(p.relative_to(ROOT)): b for p in pages if (b := _broken(p))}
    assert not broken, broken


def test_a_link_out_of_the_repository_is_caught(tmp_path: Path) -> None:
    page = ROOT / "docs" / "protocol.md"
    assert _broken(page) == []
    outside = tmp_path / "page.md"
    outside.write_text("[x](../shared/DESIGN.md) [y](#nowhere)\n# Somewhere\n", encoding="utf-8")
    assert len(_broken(outside)) == 2


def test_no_merge_conflict_is_left_in_the_tree() -> None:
    """A merge committed with its conflict markers once shipped a page that read as two."""
    marker = re.compile(r"^(<{7}|>{7}) ", re.MULTILINE)
    left = [str(path.relative_to(ROOT)) for pattern in ("*.md", "*.py", "*.toml", "*.yaml")
            for path in ROOT.rglob(pattern)
            if not {".venv", ".git", "runs", "node_modules"} & set(path.relative_to(ROOT).parts)
            and marker.search(path.read_text(encoding="utf-8", errors="replace"))]
    assert not left
