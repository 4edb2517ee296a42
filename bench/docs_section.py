"""Replace one "## " section of docs/benchmarks.md, keeping the others."""

from __future__ import annotations

from pathlib import Path

DOCS_TITLE = (
    "# Benchmarks\n\n"
    "Each section is written by the benchmark it names and gives the command, "
    "the machine and the date of its figures.\n"
)


def replace_section(path: Path, heading: str, section: str) -> None:
    """Replace the section that starts with ``heading`` in ``path``, or append it.

    The section runs from its heading line to the next "## " heading or the end
    of the file. ``section`` must start with ``heading``.
    """
    text = path.read_text() if path.exists() else DOCS_TITLE
    start = text.find(heading + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = text.find("\n## ", start + len(heading))
        rest = text[end + 1 :] if end >= 0 else ""
        text = text[:start] + section + ("\n" + rest if rest else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
