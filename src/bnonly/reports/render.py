"""Rendering: one list of sections written as Markdown, HTML and JSON.

A section is {"title": str, "blocks": [block, ...]}; a block is a dict with a "kind":
  text      {"text"}                      a paragraph
  note      {"text"}                      a paragraph in grey / italics
  question  {"text"}                      "Question. ..."
  answer    {"text"}                      "Answer. ..."
  figure    {"png", "svg"?, "caption"}    an image (with a link to its SVG)
  table     {"header", "rows", "verdict_col"?, "caption"?}
  rules     {"items"}                     the numbered rules of a claims table
  fold      {"title", "blocks", "open"}   a sub-section; in HTML it can be folded (closed unless open)
A section may say "folded": True to start closed in HTML. Every writer walks the same list, so the
three outputs cannot drift apart. report.html has a table of contents (sections and their folds),
sections that fold, figures in a responsive grid (click one for the full-size image) and a caption
on every table.
"""
from __future__ import annotations

import html
import re

from ..study.verdicts import VERDICTS

CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;max-width:1400px;
margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
nav.toc{background:#f6f8fa;border:1px solid #ddd;border-radius:6px;padding:0.6em 1.2em;margin:1em 0;columns:2 28em}
nav.toc ol{margin:0.2em 0;padding-left:1.4em} nav.toc ol ol{font-size:0.9em}
section>details>summary,details.fold>summary{cursor:pointer} section>details>summary>h2{display:inline}
details.fold{border-left:3px solid #ddd;padding-left:0.8em;margin:0.6em 0} details.fold>summary{font-weight:600}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,520px),1fr));gap:1em;align-items:start}
.figs figure{margin:0}
table{border-collapse:collapse;margin:1em 0;font-size:0.92em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f2f2f2} tr:nth-child(even) td{background:#fafafa}
td.held{background:#dff3df!important;font-weight:600} td.did-not-hold{background:#f8dada!important;font-weight:600}
td.not-measured,td.not-testable-at-this-budget,td.not-testable-at-this-depth,
td.not-applicable{background:#eee!important;color:#555}
td.inconclusive{background:#fff3cd!important}
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


def fold(title: str, blocks: list[dict], open: bool = False) -> dict:
    return {"kind": "fold", "title": title, "blocks": blocks, "open": open}


CLAIMS_CAPTION = ("Each claim judged by its numbered rule below. In 'measured', a value is the mean over seeds and "
                  "± the half-width of its 95% Student-t interval; n = the number of seeds (for a comparison of two "
                  "sets: paired per-seed differences, n = seeds both sets have).")


def claims_table(claims) -> dict:
    """The claims as a table block, verdicts coloured."""
    return table(["#", "claim", "measured", "verdict"],
                 [[str(c["id"]), c["claim"], c["measured"], c.get("label", c["verdict"])] for c in claims],
                 verdict_col=3, caption=CLAIMS_CAPTION)


def claims_blocks(claims, deciding: str) -> list[dict]:
    """A claims table, how a claim is decided, and the claims' rules."""
    return [claims_table(claims), note(deciding), {"kind": "rules", "items": [c["rule"] for c in claims]}]


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
    if k == "fold":
        return [f"### {b['title']}", ""] + [line for x in b["blocks"] for line in _md_block(x)]
    raise ValueError(f"unknown block kind {k!r}")


def render_md(title: str, sections: list[dict]) -> str:
    out = [f"# {title}", ""]
    for sec in sections:
        out += [f"## {sec['title']}", ""]
        for b in sec["blocks"]:
            out += _md_block(b)
    return "\n".join(out)


# ----------------------------------------------------------------------------- HTML
def _verdict_class(v: str) -> str:
    """A verdict cell's colour (CSS), from how its text begins."""
    return next((c for c in VERDICTS if v.startswith(c)), "").replace(" ", "-")


def html_table(header, rows, verdict_col: int | None = None, caption: str | None = None) -> str:
    out = ["<table>"] + ([f"<caption>{html.escape(caption)}</caption>"] if caption else [])
    out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
    for r in rows:
        tds = []
        for i, v in enumerate(r):
            cls = f' class="{_verdict_class(str(v))}"' if i == verdict_col else ""
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
        return (f'<figure><a href="{e(b["png"])}"><img src="{e(b["png"])}" alt="{e(b["caption"])}" loading="lazy"></a>'
                f'<figcaption>{e(b["caption"])}{link}</figcaption></figure>')
    if k == "table":
        return html_table(b["header"], b["rows"], b.get("verdict_col"), b.get("caption"))
    if k == "rules":
        return "<p><b>Rules.</b></p><ol>" + "".join(f"<li>{e(r)}</li>" for r in b["items"]) + "</ol>"
    if k == "fold":
        return (f'<details class="fold" id="{e(b["id"])}"{" open" if b.get("open") else ""}><summary>{e(b["title"])}'
                f'</summary>{_html_blocks(b["blocks"])}</details>')
    raise ValueError(f"unknown block kind {k!r}")


def _html_blocks(blocks: list[dict]) -> str:
    """Blocks in order; a run of consecutive figures shares one responsive grid."""
    out, figs = [], []
    for b in blocks + [None]:
        if b is not None and b["kind"] == "figure":
            figs.append(_html_block(b))
            continue
        if figs:
            out.append('<div class="figs">' + "".join(figs) + "</div>")
            figs = []
        if b is not None:
            out.append(_html_block(b))
    return "\n".join(out)


def _anchor(title: str, taken: set) -> str:
    """A unique id for a heading: 'claims', 'claims-2', ..."""
    base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"
    a, i = base, 1
    while a in taken:
        i += 1
        a = f"{base}-{i}"
    taken.add(a)
    return a


def render_html(title: str, sections: list[dict]) -> str:
    e = html.escape
    taken: set = set()
    sections = [{**s, "id": _anchor(s["title"], taken),
                 "blocks": [{**b, "id": _anchor(b["title"], taken)} if b["kind"] == "fold" else b for b in s["blocks"]]}
                for s in sections]
    toc = []
    for s in sections:
        subs = "".join(f'<li><a href="#{b["id"]}">{e(b["title"])}</a></li>' for b in s["blocks"] if b["kind"] == "fold")
        toc.append(f'<li><a href="#{s["id"]}">{e(s["title"])}</a>' + (f"<ol>{subs}</ol>" if subs else "") + "</li>")
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           '<meta name="viewport" content="width=device-width, initial-scale=1">', f"<title>{e(title)}</title>",
           f"<style>{CSS}</style></head><body>", f"<h1>{e(title)}</h1>",
           f'<nav class="toc" id="contents"><b>Contents</b> (click a heading to fold it)<ol>{"".join(toc)}</ol></nav>']
    for s in sections:
        out.append(f'<section id="{s["id"]}"><details{"" if s.get("folded") else " open"}><summary><h2>{e(s["title"])}'
                   f'</h2></summary>\n{_html_blocks(s["blocks"])}\n</details></section>')
    out += [OPEN_TARGET, "</body></html>", ""]
    return "\n".join(out)


# A link to a folded part opens it (and the sections around it) before the browser scrolls there.
OPEN_TARGET = """<script>
function bnonlyOpen(){var e=document.getElementById(decodeURIComponent(location.hash.slice(1)));
for(var t=e;t;t=t.parentElement){if(t.tagName==="DETAILS"){t.open=true;}}if(e){e.scrollIntoView();}}
window.addEventListener("hashchange",bnonlyOpen);bnonlyOpen();
</script>"""


# ----------------------------------------------------------------------------- JSON
def _json_block(b: dict) -> dict:
    return {k: ([_json_block(x) for x in v] if k == "blocks" else v) for k, v in b.items() if v is not None}


def json_sections(sections: list[dict]) -> list[dict]:
    """The sections as report.json keeps them: every block, folds with their blocks, as data."""
    return [{"title": s["title"], "blocks": [_json_block(b) for b in s["blocks"]]} for s in sections]
