"""Markdown for people: tables in metadata, and a model card as a page a browser shows."""

from mlops_assets.core.markdown import html_page, markdown_table


def test_a_card_becomes_a_page_with_its_tables_and_no_raw_html() -> None:
    card = "# fraud — model version 3\n\n" + markdown_table([{"metric": "roc_auc", "value": "0.91"}])
    card += "\n\nA spec's description: <script>alert(1)</script>\n"
    page = html_page("fraud model version 3", card)
    assert page.startswith("<html>") and "<title>fraud model version 3</title>" in page
    assert "<h1>fraud — model version 3</h1>" in page and "<td>roc_auc</td>" in page
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_an_empty_table_says_so() -> None:
    assert markdown_table([]) == "_(none)_"
