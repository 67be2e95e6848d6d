"""The design document is part of the repository, and every citation of it finds its section.

Fast and torch-free: reads the tracked files (`git ls-files`) and docs/design.md as text,
and imports only royalty.cli.errors (which imports nothing but royalty.errors).
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DESIGN = ROOT / "docs" / "design.md"

# Spelled in pieces so that this file does not find itself: the old design reference,
# which lived outside the repository, and the folder beside the repository that held it.
OUTSIDE = ("DESIGN" + ".md", "../" + "shared")

# `docs/design.md §2`, `§1.5`, and ranges `§1–2` / `§1.2–1.5` (en dash or hyphen)
SECTION = r"\d+(?:\.\d+)?"
CITATION = re.compile(rf"docs/design\.md §({SECTION})(?:[–-]({SECTION}))?")
SELF_REFERENCE = re.compile(rf"§({SECTION})")
# `## 1. What a value is` (sections) and `### 1.5 AdamW …` (subsections)
HEADING = re.compile(r"^(##|###) (\d+(?:\.\d+)?)[. ]", re.MULTILINE)
# a row of the exit-code table: `| 65 | `EXIT_DATAERR` | … |`
EXIT_ROW = re.compile(r"^\| (\d+) \| `(EXIT_[A-Z_]+)` \|", re.MULTILINE)
MARKDOWN_LINK = re.compile(r"\]\(([^)\s]+)\)")


@cache
def tracked_texts() -> dict[str, str]:
    """Every tracked text file (path relative to the root → content); binary files skipped."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git work tree: the tracked files cannot be listed")
    texts = {}
    for name in listed.decode("utf-8").split("\0"):
        path = ROOT / name
        if not name or not path.is_file():  # deleted in the work tree but still in the index
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        texts[name] = data.decode("utf-8", errors="replace")
    return texts


def design_sections() -> set[str]:
    text = DESIGN.read_text(encoding="utf-8")
    sections = set()
    for level, number in HEADING.findall(text):
        # a section is `## N.`, a subsection `### N.M`: a number at the wrong level is a typo
        assert (level == "##") == ("." not in number), f"docs/design.md: heading {level} {number} at the wrong level"
        sections.add(number)
    return sections


def test_the_design_document_is_tracked_and_numbered() -> None:
    assert "docs/design.md" in tracked_texts(), "docs/design.md is not tracked by git"
    sections = design_sections()
    assert {"1", "2", "3", "4", "5"} <= sections, f"docs/design.md sections found: {sorted(sections)}"


def test_nothing_points_at_the_old_design_reference_outside_the_repository() -> None:
    hits = [
        f"{name}:{number}: {line.strip()}"
        for name, text in tracked_texts().items()
        for number, line in enumerate(text.splitlines(), 1)
        if any(word in line for word in OUTSIDE)
    ]
    assert not hits, "these lines point outside the repository; cite docs/design.md instead:\n" + "\n".join(hits)


def test_markdown_links_stay_inside_the_repository_and_exist() -> None:
    bad = []
    for name, text in tracked_texts().items():
        if not name.endswith(".md"):
            continue
        for target in MARKDOWN_LINK.findall(text):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL, or an anchor in the same page
            path = ((ROOT / name).parent / target.split("#", 1)[0]).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                bad.append(f"{name}: ({target})")
    assert not bad, "links that leave the repository or name nothing:\n" + "\n".join(bad)


def test_every_citation_names_a_section_the_design_document_has() -> None:
    sections = design_sections()
    cited = []
    missing = []
    for name, text in tracked_texts().items():
        for number, line in enumerate(text.splitlines(), 1):
            for match in CITATION.finditer(line):
                for section in filter(None, match.groups()):
                    cited.append(section)
                    if section not in sections:
                        missing.append(f"{name}:{number}: {match.group(0)}")
    # the code, README, BENCHMARKS and tests cite it in many places: finding none means the
    # pattern no longer matches how they cite, not that all is well
    assert len(cited) >= 20, f"only {len(cited)} citations of docs/design.md found"
    assert not missing, "citations of sections docs/design.md does not have:\n" + "\n".join(missing)


def test_the_design_documents_own_cross_references_exist() -> None:
    sections = design_sections()
    text = DESIGN.read_text(encoding="utf-8")
    missing = sorted({s for s in SELF_REFERENCE.findall(text) if s not in sections})
    assert not missing, f"docs/design.md refers to §{', §'.join(missing)}, which it does not have"


def test_the_exit_code_table_matches_cli_errors() -> None:
    from royalty.cli import errors

    constants = {name: value for name, value in vars(errors).items() if name.startswith("EXIT_") and isinstance(value, int)}
    assert len(constants) >= 7, f"cli/errors.py defines only {sorted(constants)}"
    assert {code for _, code in errors.EXIT_CODES} <= set(constants.values())
    documented: dict[str, int] = {}
    for code, name in EXIT_ROW.findall(DESIGN.read_text(encoding="utf-8")):
        assert name not in documented, f"docs/design.md lists {name} twice"
        documented[name] = int(code)
    wrong = {name: (value, documented.get(name)) for name, value in constants.items() if documented.get(name) != value}
    assert not wrong, f"cli/errors.py value vs docs/design.md's exit-code table: {wrong}"
    stale = sorted(set(documented) - set(constants))
    assert not stale, f"docs/design.md's exit-code table lists codes cli/errors.py does not define: {stale}"
