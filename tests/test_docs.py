"""The README and docs/ hold together: the README stays a newcomer's page, and every relative link
in them leads to a file that exists (and, for a link to a markdown heading, to that heading)."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250  # a newcomer's page: the rest of the documentation lives in docs/
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target)
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a markdown file's headings (outside code blocks)."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#+ (.+)$", text, flags=re.M)}


def broken_links(markdown: str, page: Path) -> list[str]:
    """Every relative link in `markdown` (the text of `page`) whose file or heading does not exist."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto: are not the repository's
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target} (no file {resolved.relative_to(ROOT) if resolved.is_relative_to(ROOT) else resolved})")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading #{anchor} in {resolved.relative_to(ROOT)})")
    return broken


def test_readme_is_a_short_page_that_states_the_test_command():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move sections to docs/"
    # .ci/run runs `make test`: the README must say so where a newcomer reads it
    assert any(line.startswith("make test ") for line in lines), "README.md no longer shows `make test`"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    assert broken_links(page.read_text(), page) == [], f"{page.relative_to(ROOT)}: broken links"


# (markdown, the broken links expected): the check must catch what a move breaks
CASES = [
    ("[a](missing.md)", ["missing.md"]),  # a file that is not there
    ("[a](stream.md#no-such-heading)", ["stream.md#no-such-heading"]),  # a heading that is not there
    ("[a](../README.md#two-commands) [b](stream.md)", []),  # a heading and a file that exist
    ("[a](https://example.org/x)", []),  # a web address is not the repository's
    ("```\n[a](missing.md)\n```", []),  # inside a code block: not a link
]


@pytest.mark.parametrize("markdown,expected", CASES)
def test_the_link_check_finds_what_is_broken(markdown, expected):
    found = broken_links(markdown, ROOT / "docs" / "probe.md")  # as if written in docs/
    assert [f.split(" ")[0] for f in found] == expected
