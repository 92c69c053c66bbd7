"""The report's HTML and markdown building blocks: a Section, tables in both forms (z_u's rows
in bold), and the comparison's markdown as HTML. Used by report.py and compat_report.py.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass

from downstream.charts import Z_U


@dataclass
class Section:
    title: str
    html: str  # body fragment (the renderer adds the <h2>)
    markdown: str  # body fragment (the renderer adds the "## ")


def _md_table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """z_u's rows (any cell exactly "z_u") are set in bold."""
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    trs = "".join(
        ("<tr class='zu'>" if any(str(c) == Z_U for c in r) else "<tr>")
        + "".join(f"<td>{html.escape(str(c))}</td>" for c in r)
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def tables(head: Sequence[str], rows: Sequence[Sequence[object]]) -> tuple[str, str]:
    """(HTML table, markdown table) of the same rows."""
    return _html_table(head, rows), _md_table(head, rows)


def inline_html(text: str) -> str:
    """Escaped text with `code` spans."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


_RULE = re.compile(r"^\|(\s*:?-+:?\s*\|)+\s*$")  # a markdown table's header rule


def markdown_html(md: str) -> str:
    """The comparison's markdown (paragraph lines and pipe tables, as baselines.results_rows
    writes them) as HTML paragraphs and tables."""
    out: list[str] = []
    table: list[list[str]] = []
    for line in [*md.splitlines(), ""]:
        if line.lstrip().startswith("|"):
            if not _RULE.match(line.strip()):
                table.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if table:
            out.append(_html_table(table[0], table[1:]))
            table = []
        if line.strip():
            out.append(f"<p>{inline_html(line.strip())}</p>")
    return "".join(out)
