"""The page a user forwards to a colleague: a report's words, tables and figures in one self-contained
HTML file (figures inline as PNG data, the style inline, no script, nothing fetched from the network),
logged as the run's report.html so that MLflow's artifact viewer and any browser open it."""
from __future__ import annotations

import base64
import html as htmllib
import io

NAME = "report.html"

STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1a1a1a;
       max-width: 1100px; margin: 1.2em auto; padding: 0 1em; }
h1 { font-size: 1.45em; margin: 0 0 .3em; }
.meta { color: #555; font-size: .9em; margin-bottom: 1em; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; }
th { background: #f3f3f3; }
td { font-variant-numeric: tabular-nums; }
tr:first-child td { background: #fffbe6; }
code { background: #f3f3f3; padding: 0 .2em; }
pre { background: #f3f3f3; padding: .6em; overflow-x: auto; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
"""


def png(fig) -> bytes:
    """A matplotlib figure as PNG bytes, with fonts that draw every label (harness.figures.readable)."""
    from harness.figures import readable
    readable(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def html(title: str, markdown: str, figures: list[tuple[str, bytes]] = (), meta: str = "") -> str:
    """The page: its title, a line of context, the report's Markdown (tables kept: they come first, so
    the headline table is on the first screen) and the figures below it."""
    from markdown_it import MarkdownIt
    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(markdown)
    figs = "".join(f'<figure><img alt="{htmllib.escape(name)}" src="data:image/png;base64,'
                   f'{base64.b64encode(data).decode("ascii")}"><figcaption>{htmllib.escape(name)}</figcaption></figure>\n'
                   for name, data in figures)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{htmllib.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n"
            f"<h1>{htmllib.escape(title)}</h1>\n" + (f'<p class="meta">{htmllib.escape(meta)}</p>\n' if meta else "")
            + body + figs + "</body></html>\n")


def log(title: str, markdown: str, figures: list[tuple[str, bytes]] = (), meta: str = "",
        run_id: str | None = None, client=None) -> None:
    """report.html on the active run, or on `run_id` through `client`."""
    page = html(title, markdown, figures, meta)
    if run_id is None:
        import mlflow
        mlflow.log_text(page, NAME)
    else:
        client.log_text(run_id, page, NAME)


def location(client, run_id: str) -> str:
    """Where a run's report.html lies: a file path where the artifact store is a local folder (what a
    browser opens), else its artifact URI (`mlflow artifacts download -u URI` fetches it)."""
    from urllib.parse import unquote, urlparse
    uri = client.get_run(run_id).info.artifact_uri.rstrip("/") + "/" + NAME
    parsed = urlparse(uri)
    return unquote(parsed.path) if parsed.scheme == "file" else uri
