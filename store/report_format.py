"""A report as Markdown and as HTML: a title, a list of facts, sections and a closing note.

A section is ``(title, heads, rows)``: a table with column ``heads`` and ``rows`` of
cell texts, or, when ``heads`` is None, a list of ``(name, text)`` items like the facts.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

Section = tuple[str, Sequence[str] | None, Sequence[Sequence[str]]]

_STYLE = ("<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
          "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}</style>")


def markdown(title: str, facts: Sequence[tuple[str, str]], sections: Sequence[Section], note: str) -> str:
    """The report as Markdown (facts and list items as ``- **name**: text``)."""
    lines = [f"# {title}", ""] + [f"- **{k}**: {v}" for k, v in facts] + [""]
    for head, heads, rows in sections:
        lines += [f"## {head}", ""]
        if heads is None:
            lines += [f"- **{k}**: {v}" for k, v in rows]
        else:
            lines += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines += [""]
    return "\n".join(lines + [note, ""])


def html_page(title: str, facts: Sequence[tuple[str, str]], sections: Sequence[Section], note: str) -> str:
    """The report as a standalone HTML page (every text escaped)."""
    e = html.escape
    page = ["<!doctype html><html><head><meta charset='utf-8'>", f"<title>{e(title)}</title>", _STYLE,
            "</head><body>", f"<h1>{e(title)}</h1><ul>"]
    page += [f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in facts] + ["</ul>"]
    for head, heads, rows in sections:
        if heads is None:
            page += [f"<h2>{e(head)}</h2><ul>"] + [f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in rows] + ["</ul>"]
        else:
            page += [f"<h2>{e(head)}</h2><table><tr>" + "".join(f"<th>{e(h)}</th>" for h in heads) + "</tr>"]
            page += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows] + ["</table>"]
    return "\n".join(page + [f"<p>{e(note)}</p></body></html>"])
