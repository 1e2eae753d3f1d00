"""Issue #25 item 8: the README's links, the paths it names and the sections anything cites
resolve. It pointed to a SPEC that is not in the repository, and code cited a "Lints" section
and the README a "not yet" list that do not exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PATH_ROOTS = ("deploy/", "config/", "docs/", "bench/", "kmsaudit/", "tests/", "requirements/")


def headings() -> set[str]:
    out = set()
    for line in README.splitlines():
        if match := re.match(r"^#{1,4} (.+)$", line):
            out.add(match.group(1).strip().replace("`", ""))
    return out


def _slug(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def _expand(path: str) -> list[str]:
    if match := re.search(r"\{([^}]+)\}", path):
        return [
            p for part in match.group(1).split(",") for p in _expand(path[: match.start()] + part + path[match.end() :])
        ]
    return [path]


def test_every_markdown_link_and_anchor_resolves() -> None:
    slugs = {_slug(h) for h in headings()}
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", README):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        if path and not (ROOT / path).exists():
            broken.append(target)
        if anchor and not path and anchor not in slugs:
            broken.append(target)
    assert broken == []


def test_every_path_the_readme_names_exists() -> None:
    named = {
        p.rstrip(".,:;")
        for p in re.findall(r"`([^`\s]+)`", README)
        if p.startswith(PATH_ROOTS)
        and "*" not in p
        and "<" not in p
        and ("." in p.rsplit("/", 1)[-1] or p.endswith("/"))  # a file or a folder, not `kmsaudit/KeyAccount`
    }
    missing = sorted(p for n in named for p in _expand(n) if not (ROOT / p.split(":")[0]).exists())
    assert missing == []


def test_every_cited_readme_section_exists() -> None:
    """`README "Accepting known access"` and `(README: Integrations)` in code, docs and the README."""
    known = headings()
    cited: set[tuple[str, str]] = set()
    files = [ROOT / "README.md", ROOT / "CHANGELOG.md", *ROOT.glob("deploy/**/*"), *ROOT.glob("docs/**/*.md")]
    files += [*ROOT.glob("kmsaudit/**/*.py"), *ROOT.glob("config/**/*")]
    for path in files:
        if not path.is_file() or path.suffix in (".png", ".db"):
            continue
        text = " ".join(path.read_text(encoding="utf-8", errors="replace").split())
        for group in re.findall(r'README(?: section)? ((?:"[^"]+"(?:,? (?:and|or) |, )?)+)', text):
            cited |= {(str(path.relative_to(ROOT)), name) for name in re.findall(r'"([^"]+)"', group)}
        for name in re.findall(r"README: ([A-Z][^)\"'\n]*?)\)", text):
            cited.add((str(path.relative_to(ROOT)), name.strip()))
    assert cited, "the test finds the citations"
    assert sorted((where, name) for where, name in cited if name.replace("`", "") not in known) == []


def test_the_readme_cites_no_document_outside_the_repository() -> None:
    assert "SPEC" not in README or (ROOT / "SPEC.md").exists() or (ROOT / "docs" / "SPEC.md").exists()
    assert "not yet" not in README.split("## Quick start")[0]  # no "not yet" list exists to point to
