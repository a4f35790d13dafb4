"""A run directory as one self-contained HTML page (``fedbcs report RUN_DIR``).

The page holds the run's configuration, the per-site test tables of ``summary.json``
(model selected on validation, last round), the validation Dice curves and the
prediction overlays (PNG files of ``plots/``, embedded as base64 data URIs; the curves are
drawn if missing), and the server-side metrics of ``metrics.jsonl`` when the method
reports any (FedBCS: prototype clusters per level and class, FSR mixing weights). No
external CSS, script or image: the file can be mailed or archived as it is.

Examples
--------
>>> from fedbcs_lightning.reporting.report import write_report
>>> write_report("runs/demo")  # doctest: +SKIP
PosixPath('runs/demo/report.html')
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedbcs_lightning.io import atomic_write_text
from fedbcs_lightning.rundir import RunDirectoryError

#: What a finished run directory must hold for a report.
REQUIRED_FILES = ("config.yaml", "metrics.jsonl", "summary.json")

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; } tr.mean td { font-weight: bold; background: #fafafa; }
img { max-width: 100%; border: 1px solid #ddd; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.85em; }
.note { color: #666; }
"""


def check_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a path, or :class:`RunDirectoryError` naming the missing files."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirectoryError(f"run directory {str(run_dir)!r} does not exist")
    missing = [name for name in REQUIRED_FILES if not (run_dir / name).is_file()]
    if missing:
        raise RunDirectoryError(
            f"{str(run_dir)!r} is not a finished run directory: missing {', '.join(missing)} "
            "(`fedbcs fit` writes config.yaml and metrics.jsonl as it runs, summary.json "
            "when it ends)"
        )
    return run_dir


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of ``run_dir`` to ``out`` (default ``<run_dir>/report.html``),
    atomically; return its path."""
    run_dir = check_run_dir(run_dir)
    page = render_report(run_dir)
    return atomic_write_text(Path(out) if out else run_dir / "report.html", page)


def render_report(run_dir: str | Path) -> str:
    """The HTML text of the report of a checked run directory."""
    import yaml

    from fedbcs_lightning.reporting.plots import (
        DICE_CURVES,
        OVERLAYS,
        PLOTS_DIR,
        figure_png,
        read_metrics,
        server_metrics_figure,
        write_dice_curves,
    )

    run_dir = Path(run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    summary = json.loads((run_dir / "summary.json").read_text())
    rows = read_metrics(run_dir / "metrics.jsonl")
    curves = run_dir / PLOTS_DIR / DICE_CURVES
    if not curves.is_file() and any(r.get("split") == "val" for r in rows):
        write_dice_curves(run_dir)
    overlays = run_dir / PLOTS_DIR / OVERLAYS

    best, rounds = summary.get("best_round"), summary.get("rounds")
    parts = [f"<h1>Run {_e(run_dir.name)}</h1>", _overview(config, summary)]

    parts.append("<h2>Test results per site</h2>")
    for key, title in (
        ("test_selected", f"Model selected on validation (round {best})"),
        ("test_last", f"Last round ({rounds})"),
    ):
        if key in summary:
            parts.append(f"<h3>{_e(title)}</h3>")
            parts.append(_metrics_table(summary[key]))

    parts.append("<h2>Validation Dice over rounds</h2>")
    parts.append(
        _image(curves.read_bytes(), "validation Dice curves")
        if curves.is_file()
        else '<p class="note">no validation rows in metrics.jsonl</p>'
    )

    parts.append("<h2>Predictions on validation images</h2>")
    if overlays.is_file():
        parts.append(_image(overlays.read_bytes(), "prediction overlays"))
    else:
        parts.append(f'<p class="note">no {PLOTS_DIR}/{OVERLAYS} in this run directory</p>')

    class_names = summary.get("class_names")
    figure = server_metrics_figure(rows, class_names)
    if figure is not None:
        parts.append("<h2>Server-side metrics per round</h2>")
        parts.append(
            '<p class="note">FedBCS: number of prototype clusters per level and class '
            "(<code>clusters/&lt;level&gt;/&lt;class&gt;</code>) and the share of the "
            "instance-normalised amplitude in each FSR layer "
            "(<code>fsr/level&lt;k&gt;/normalised</code>).</p>"
        )
        parts.append(_image(figure_png(figure), "server-side metrics"))
        parts.append(_server_table(rows, class_names))

    parts.append("<h2>Configuration</h2>")
    parts.append(
        "<details><summary>resolved config.yaml</summary><pre>"
        + _e(yaml.safe_dump(config, sort_keys=False))
        + "</pre></details>"
    )
    body = "\n".join(parts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>fedbcs report: {_e(run_dir.name)}</title><style>{_CSS}</style></head>"
        f"<body>\n{body}\n</body></html>\n"
    )


def _e(value: Any) -> str:
    return html.escape(str(value))


def _image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<p><img alt="{_e(alt)}" src="data:image/png;base64,{data}"></p>'


def _get(config: Mapping[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


_OVERVIEW_KEYS = (
    ("data set", "data.name"),
    ("method", "train.method"),
    ("rounds", "train.rounds"),
    ("local epochs", "train.local_epochs"),
    ("clients", "train.clients"),
    ("image size", "data.image_size"),
    ("backbone", "model.backbone"),
    ("model width", "model.width"),
    ("optimizer", "train.optimizer"),
    ("learning rate", "train.lr"),
    ("batch size", "train.batch_size"),
    ("seed", "run.seed"),
)


def _overview(config: Mapping[str, Any], summary: Mapping[str, Any]) -> str:
    cells = [(label, _get(config, key)) for label, key in _OVERVIEW_KEYS]
    sites = list(summary.get("test_selected", {}).get("sites", {}))
    cells.insert(5, ("sites", ", ".join(sites) if sites else None))
    cells.append(("round selected on validation", summary.get("best_round")))
    rows = "".join(
        f"<tr><td>{_e(label)}</td><td>{_e('all' if value is None else value)}</td></tr>"
        for label, value in cells
    )
    return f"<table><tr><th>setting</th><th>value</th></tr>{rows}</table>"


def _column_title(key: str) -> str:
    name, _, region = key.partition("/")
    name = {"dice": "Dice", "hd95": "HD95", "assd": "ASSD", "vcdr_error": "vCDR error"}.get(
        name, name
    )
    return f"{name} {region}".strip()


def _fmt(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.4f}" if math.isfinite(value) else "&ndash;"
    return _e(value)


def _metrics_table(block: Mapping[str, Any]) -> str:
    """Rows: sites and their mean; columns: the metrics in the order they were written."""
    per_site = dict(block.get("sites", {}))
    if "mean" in block:
        per_site["mean"] = block["mean"]
    if not per_site:
        return '<p class="note">no sites</p>'
    columns = list(dict.fromkeys(k for metrics in per_site.values() for k in metrics))
    head = "".join(f"<th>{_e(_column_title(c))}</th>" for c in columns)
    body = []
    for site, metrics in per_site.items():
        css = ' class="mean"' if site == "mean" else ""
        cells = "".join(f"<td>{_fmt(metrics.get(c, math.nan))}</td>" for c in columns)
        body.append(f"<tr{css}><td>{_e(site)}</td>{cells}</tr>")
    return f"<table><tr><th>site</th>{head}</tr>{''.join(body)}</table>"


def _server_table(rows: list[dict[str, Any]], class_names: list[str] | None = None) -> str:
    from fedbcs_lightning.reporting.plots import server_label

    server = [r for r in rows if r.get("split") == "server"]
    keys = list(dict.fromkeys(k for r in server for k in r if k not in ("round", "split", "site")))
    head = "".join(f"<th>{_e(server_label(k, class_names))}</th>" for k in keys)
    body = "".join(
        f"<tr><td>{_e(r['round'])}</td>"
        + "".join(f"<td>{_fmt_server(r.get(k))}</td>" for k in keys)
        + "</tr>"
        for r in server
    )
    return (
        "<details><summary>table</summary>"
        f"<table><tr><th>round</th>{head}</tr>{body}</table></details>"
    )


def _fmt_server(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return "" if value is None else _fmt(value)
