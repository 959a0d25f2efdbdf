"""One self-contained HTML page: figures embedded as PNG data URIs, tables, run configs, verdicts.

A report is a list of :class:`Rendered` sections: a study's
:class:`~widthlab.studies.base.Section` with its figures saved as files and its runs' records
(:mod:`widthlab.report.builder` does that); :func:`write_report` writes the page atomically
(temporary file, then rename).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from widthlab import __version__
from widthlab._io import atomic_path
from widthlab.studies.base import Section

_CSS = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444} h2{margin-top:2em;border-bottom:1px solid #aaa}
figure{display:inline-block;margin:.5em;vertical-align:top;max-width:560px}
figure img{max-width:100%} figcaption{font-size:.85em;color:#555}
table{border-collapse:collapse;font-size:.8em;margin:.5em 0} td,th{border:1px solid #ccc;
padding:2px 6px;text-align:right} th{background:#eee}
.holds{color:#166b16} .fails{color:#a31515} .budget{font-size:.9em;color:#444}
details{margin:.5em 0} pre{font-size:.75em}
blockquote.journal{border-left:4px solid #c9b458;margin:.5em 0;padding:.3em .8em;background:#fbf8ea}
"""


@dataclass
class Rendered:
    """A section ready for the page: saved figures ``(caption, PNG path)`` and run records
    (``Store.get_run``)."""

    section: Section
    figures: list[tuple[str, Path]] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)


def _img(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def _section(r: Rendered, anchor: str) -> str:
    s = r.section
    out = [f'<h2 id="{anchor}">{html.escape(s.title)}</h2>']
    if s.error:
        out.append(f'<p class="fails"><b>This section could not be drawn:</b> '
                   f"{html.escape(s.error)}</p>")
    if s.intro:
        out.append(f"<p>{html.escape(s.intro)}</p>")
    if s.journal:
        out.append(f'<blockquote class="journal"><b>The journal concluded:</b> '
                   f"{html.escape(s.journal)}</blockquote>")
    if s.budget or s.journal_budget:
        out.append(f'<p class="budget"><b>Training budget:</b> {html.escape(s.budget or "-")}'
                   f'<br><b>The journal\'s budget:</b> {html.escape(s.journal_budget or "-")}'
                   "</p>")
    if s.verdicts:
        out.append("<h3>Claims, recomputed</h3><ul>")
        for v in s.verdicts:
            cls, mark = ("holds", "holds") if v.holds else ("fails", "does not hold")
            out.append(f'<li class="{cls}"><b>{mark}:</b> {html.escape(v.text)}</li>')
        out.append("</ul>")
    for caption, path in r.figures:
        out.append(f"<figure>{_img(path)}<figcaption>{html.escape(caption)}</figcaption>"
                   "</figure>")
    for caption, table in s.tables:
        out.append(f"<h3>{html.escape(caption)}</h3>")
        out.append(table.to_html(index=False, float_format=lambda x: f"{x:.4g}", na_rep="-",
                                 border=0))
    for run in r.runs:
        cfg = json.dumps(run.get("config", {}), indent=2, sort_keys=True, default=str)
        meta = {k: run.get(k) for k in ("run_id", "study", "dataset", "status", "code_version",
                                        "device", "precision", "host", "created_at",
                                        "finished_at", "timings")}
        meta_json = json.dumps(meta, indent=2, default=str)
        out.append(f"<details><summary>run {html.escape(str(run.get('run_id')))}: config and "
                   f"code version</summary><pre>{html.escape(meta_json)}"
                   f"\n{html.escape(cfg)}</pre></details>")
    return "\n".join(out)


def write_report(sections: list[Rendered], path: str | os.PathLike,
                 title: str = "widthlab report") -> Path:
    """Write the page to ``path`` (atomically) and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    anchors = [f"s{i + 1}" for i in range(len(sections))]
    toc = "".join(f'<li><a href="#{a}">{html.escape(s.section.title)}</a></li>'
                  for a, s in zip(anchors, sections, strict=True))
    body = (f'<nav><h2>Contents</h2><ol class="toc">{toc}</ol></nav>' if len(sections) > 1
            else "") + "\n".join(_section(s, a) for s, a in zip(sections, anchors, strict=True))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p>widthlab {__version__}, written {stamp}. Every figure and claim below is "
            f"recomputed from the results store.</p>{body}</body></html>")
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path
