"""``dedup --report groups.html``: a self-contained HTML page of the duplicate groups.

One file, no external resources: thumbnails are embedded as JPEG data URIs, and a
few lines of script filter the duplicates by their score to the kept copy (also
from the address: ``groups.html#min=0.95&max=0.99``). Each
group shows its id (the same as in text, JSON and CSV), and each member its path,
pixel size, file size and scores; the kept copy is marked.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections import defaultdict
from collections.abc import Sequence

from imageprism.cli._contact_sheet import _thumbnail
from imageprism.cli._evidence import Member

__all__ = ["html_report"]

THUMB = 160

_STYLE = """
body{font:14px system-ui,sans-serif;margin:1em;color:#222}
.group{border:1px solid #ccc;margin:1em 0;padding:.5em}
.cards{display:flex;flex-wrap:wrap;gap:.5em}
.card{width:180px;border:3px solid #e67e22;padding:4px;word-break:break-all;font-size:12px}
.card.kept{border-color:#2ea043}
.badge{background:#2ea043;color:#fff;padding:0 4px}
"""

_SCRIPT = """
function applyFilter(){
  var lo=parseFloat(document.getElementById('min-score').value)||0;
  var hi=parseFloat(document.getElementById('max-score').value);if(isNaN(hi))hi=1;
  document.querySelectorAll('.group').forEach(function(g){
    var shown=0;
    g.querySelectorAll('.card[data-score]').forEach(function(c){
      var s=parseFloat(c.dataset.score),ok=s>=lo&&s<=hi;c.style.display=ok?'':'none';if(ok)shown++;});
    g.style.display=shown?'':'none';});
}
document.getElementById('min-score').addEventListener('input',applyFilter);
document.getElementById('max-score').addEventListener('input',applyFilter);
location.hash.slice(1).split('&').forEach(function(kv){  // e.g. groups.html#min=0.95&max=0.99
  var p=kv.split('='),el=document.getElementById(p[0]+'-score');if(el&&p[1])el.value=p[1];});
applyFilter();
"""


def html_report(rows: Sequence[Member], *, title: str, summary: str, sizes: dict[int, tuple[str, str]]) -> bytes:
    """The page for the groups with duplicates among ``rows``; ``sizes[i]``: (pixels, bytes) text of input ``i``."""
    groups: dict[int, list[Member]] = defaultdict(list)
    for row in rows:
        groups[row.group].append(row)
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1><p id=\"summary\">{html.escape(summary)}</p>",
        ('<p>Show duplicates scoring from <input id="min-score" type="number" step="0.01" min="0" max="1" value="0">'
         ' to <input id="max-score" type="number" step="0.01" min="0" max="1" value="1"></p>'),
    ]
    for group, members in groups.items():
        if len(members) < 2:
            continue
        parts.append(f'<section class="group" id="group-{group}" data-group="{group}">')
        parts.append(f"<h2>group {group} ({len(members)} images)</h2><div class=\"cards\">")
        parts.extend(_card(m, sizes.get(m.index, ("?", "?"))) for m in members)
        parts.append("</div></section>")
    parts.append(f"<script>{_SCRIPT}</script></body></html>")
    return "\n".join(parts).encode("utf-8")


def _card(member: Member, size: tuple[str, str]) -> str:
    name = html.escape(member.name)
    if member.is_representative:
        head, attrs = '<span class="badge">kept</span>', 'class="card kept"'
    else:
        detail = ", ".join(f"{k} {'n/a' if v is None else f'{v:.4f}'}" for k, v in (member.scores or {}).items())
        head = f'score <b class="score">{member.score:.4f}</b> <span class="dims">({html.escape(detail)})</span>'
        attrs = f'class="card" data-score="{member.score:.6f}"'
    return (
        f'<div {attrs} data-path="{name}"><img alt="{name}" src="{_data_uri(member.name)}" '
        f'width="{THUMB}" height="{THUMB}"><br>{head}<br><span class="path">{name}</span><br>'
        f'<span class="size">{size[0]}, {size[1]}</span></div>'
    )


def _data_uri(path: str) -> str:
    buffer = io.BytesIO()
    _thumbnail(path if os.path.exists(path) else b"", THUMB).save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
