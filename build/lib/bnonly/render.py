"""Rendering: one list of sections written as Markdown, HTML and JSON.

A section is {"title": str, "blocks": [block, ...]}; a block is a dict with a "kind":
  text      {"text"}                      a paragraph
  note      {"text"}                      a paragraph in grey / italics
  question  {"text"}                      "Question. ..."
  answer    {"text"}                      "Answer. ..."
  figure    {"png", "svg"?, "caption"}    an image (with a link to its SVG)
  table     {"header", "rows", "verdict_col"?, "caption"?}
  rules     {"items"}                     the numbered rules of a claims table
Every writer walks the same list, so the three outputs cannot drift apart.
"""
from __future__ import annotations

import html

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1150px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
table{border-collapse:collapse;margin:1em 0;font-size:0.92em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2} tr:nth-child(even) td{background:#fafafa}
td.held{background:#dff3df!important;font-weight:600} td.did-not-hold{background:#f8dada!important;font-weight:600}
td.not-measured,td.not-testable-at-this-budget,td.not-applicable{background:#eee!important;color:#555}
figure{margin:1.2em 0} img{max-width:100%;height:auto}
figcaption,caption{font-size:0.9em;color:#555;text-align:left} .note{color:#555}"""


def text(t: str) -> dict:
    return {"kind": "text", "text": t}


def note(t: str) -> dict:
    return {"kind": "note", "text": t}


def figure(png: str, caption: str, svg: str | None = None) -> dict:
    return {"kind": "figure", "png": png, "svg": svg, "caption": caption}


def table(header, rows, verdict_col: int | None = None, caption: str | None = None) -> dict:
    return {"kind": "table", "header": list(header), "rows": [list(r) for r in rows], "verdict_col": verdict_col,
            "caption": caption}


def claims_table(claims) -> dict:
    """The claims as a table block, verdicts coloured."""
    return table(["#", "claim", "measured", "verdict"],
                 [[str(c["id"]), c["claim"], c["measured"], c["verdict"]] for c in claims], verdict_col=3)


def claims_blocks(claims) -> list[dict]:
    """A claims table and its rules."""
    return [claims_table(claims), {"kind": "rules", "items": [c["rule"] for c in claims]}]


# ----------------------------------------------------------------------------- Markdown
def md_table(header, rows) -> str:
    def esc(s):
        return str(s).replace("|", "\\|").replace("\n", " ")
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def _md_block(b: dict) -> list[str]:
    k = b["kind"]
    if k == "text":
        return [b["text"], ""]
    if k == "note":
        return [f"*{b['text']}*", ""]
    if k == "question":
        return [f"**Question.** {b['text']}", ""]
    if k == "answer":
        return [f"**Answer.** {b['text']}", ""]
    if k == "figure":
        link = f" ([SVG]({b['svg']}))" if b.get("svg") else ""
        return [f"![{b['caption']}]({b['png']})", "", f"*{b['caption']}*{link}", ""]
    if k == "table":
        return ([f"*{b['caption']}*", ""] if b.get("caption") else []) + [md_table(b["header"], b["rows"]), ""]
    if k == "rules":
        return ["Rules:", ""] + [f"{i}. {r}" for i, r in enumerate(b["items"], 1)] + [""]
    raise ValueError(f"unknown block kind {k!r}")


def render_md(title: str, sections: list[dict]) -> str:
    out = [f"# {title}", ""]
    for sec in sections:
        out += [f"## {sec['title']}", ""]
        for b in sec["blocks"]:
            out += _md_block(b)
    return "\n".join(out)


# ----------------------------------------------------------------------------- HTML
def html_table(header, rows, verdict_col: int | None = None, caption: str | None = None) -> str:
    out = ["<table>"] + ([f"<caption>{html.escape(caption)}</caption>"] if caption else [])
    out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
    for r in rows:
        tds = []
        for i, v in enumerate(r):
            cls = f' class="{v.replace(" ", "-")}"' if i == verdict_col else ""
            tds.append(f"<td{cls}>{html.escape(str(v))}</td>")
        out.append("<tr>" + "".join(tds) + "</tr>")
    return "\n".join(out + ["</table>"])


def _html_block(b: dict) -> str:
    e = html.escape
    k = b["kind"]
    if k == "text":
        return f"<p>{e(b['text'])}</p>"
    if k == "note":
        return f'<p class="note">{e(b["text"])}</p>'
    if k == "question":
        return f"<p><b>Question.</b> {e(b['text'])}</p>"
    if k == "answer":
        return f"<p><b>Answer.</b> {e(b['text'])}</p>"
    if k == "figure":
        link = f' (<a href="{e(b["svg"])}">SVG</a>)' if b.get("svg") else ""
        return (f'<figure><img src="{e(b["png"])}" alt="{e(b["caption"])}"><figcaption>{e(b["caption"])}{link}'
                "</figcaption></figure>")
    if k == "table":
        return html_table(b["header"], b["rows"], b.get("verdict_col"), b.get("caption"))
    if k == "rules":
        return "<p><b>Rules.</b></p><ol>" + "".join(f"<li>{e(r)}</li>" for r in b["items"]) + "</ol>"
    raise ValueError(f"unknown block kind {k!r}")


def render_html(title: str, sections: list[dict]) -> str:
    e = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
           f"<style>{CSS}</style></head><body>", f"<h1>{e(title)}</h1>"]
    for sec in sections:
        out.append(f"<h2>{e(sec['title'])}</h2>")
        out += [_html_block(b) for b in sec["blocks"]]
    out += ["</body></html>", ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- JSON
def json_sections(sections: list[dict]) -> list[dict]:
    """The sections as report.json keeps them: every block but figures' file names, as data."""
    return [{"title": s["title"], "blocks": [{k: v for k, v in b.items() if v is not None} for b in s["blocks"]]}
            for s in sections]
