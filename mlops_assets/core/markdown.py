"""Markdown for people: tables in asset metadata, check evidence and model cards."""

from collections.abc import Iterable, Mapping


def markdown_table(rows: Iterable[Mapping[str, object]]) -> str:
    rows = list(rows)
    if not rows:
        return "_(none)_"
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(r[h]) for h in header) + " |" for r in rows])


# The look of every page a person opens from the Dagster UI (model cards, drift reports).
PAGE_STYLE = (
    "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;font-size:12px}"
    "td,th{border:1px solid #ccc;padding:3px 6px}</style>"
)


def html_page(title: str, markdown: str) -> str:
    """A markdown document (a model card) as a standalone HTML page a browser shows (a .md file it would download).
    The markdown is ours, but values in it come from specs and data: raw HTML in it is escaped, not rendered."""
    from html import escape

    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    return (
        f"<html><head><meta charset='utf-8'><title>{escape(title)}</title>{PAGE_STYLE}</head><body>{body}</body></html>"
    )
