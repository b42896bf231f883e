"""Code comments cite documents of this repository, and the sections they cite exist.

A maintainer following a comment must land on a page that is here: no design notes outside the
repository, no issue numbers, and every ``docs/<page>.md#<section>`` anchor is a heading of that page
(GitHub's anchor rule: lower case, punctuation dropped, spaces as hyphens).
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "teleprompt_assets"
OUTSIDE = re.compile(r"DESIGN ?(§|section)|DESIGN\.md|PITFALLS|\b[Ii]ssue #?\d+")
CITED = re.compile(r"(docs/[\w-]+\.md)(?:#([\w-]+))?")


def _anchors(page: Path) -> set[str]:
    headings = [line.lstrip("#").strip() for line in page.read_text().splitlines() if line.startswith("#")]
    return {re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", h.lower())) for h in headings}


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_comment_cites_a_document_outside_the_repository_or_an_issue():
    found = [f"{path.relative_to(REPO)}:{n}: {line.strip()}" for path in _sources()
             for n, line in enumerate(path.read_text().splitlines(), 1) if OUTSIDE.search(line)]
    assert found == [], "\n".join(found)


def test_every_cited_page_and_section_exists():
    missing = []
    for path in _sources():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for page, anchor in CITED.findall(line):
                target = REPO / page
                if not target.exists():
                    missing.append(f"{path.relative_to(REPO)}:{n}: {page} does not exist")
                elif anchor and anchor not in _anchors(target):
                    missing.append(f"{path.relative_to(REPO)}:{n}: {page} has no section #{anchor}")
    assert missing == [], "\n".join(missing)
