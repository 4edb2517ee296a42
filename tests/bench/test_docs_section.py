"""Replacing one section of the benchmarks page keeps the other sections."""

from bench.docs_section import DOCS_TITLE, replace_section


def test_replace_section_keeps_others(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\n## A\n\nold a\n\n## B\n\nb text\n")

    replace_section(page, "## A", "## A\n\nnew a\n")

    assert page.read_text() == "# Benchmarks\n\n## A\n\nnew a\n\n## B\n\nb text\n"


def test_replace_section_last_section(tmp_path):
    page = tmp_path / "benchmarks.md"
    page.write_text("# Benchmarks\n\n## A\n\na\n\n## B\n\nold b\n")

    replace_section(page, "## B", "## B\n\nnew b\n")

    assert page.read_text() == "# Benchmarks\n\n## A\n\na\n\n## B\n\nnew b\n"


def test_replace_section_appends_missing(tmp_path):
    page = tmp_path / "benchmarks.md"

    replace_section(page, "## C", "## C\n\nc\n")

    assert page.read_text() == DOCS_TITLE + "\n## C\n\nc\n"
