"""The evaluation report: one self-contained HTML file (figures embedded) plus the same figures as PNGs.

It holds what a reader needs to judge a model without opening MLflow: the
per-disease AUC chart, real vs generated images per disease, the paper's
tables rebuilt (quoted numbers labelled), the calibration of the evaluator,
the configuration and the exact model versions. Report text never appears in
it (only sample ids); figures that contain generated images are marked
synthetic in their PNG metadata.
"""

from __future__ import annotations

import base64
import html
import json
from typing import Any

import numpy as np

from diffcxr.constants import EVAL_DISEASES
from diffcxr.figures import png_bytes, pyplot

SYNTHETIC_META = {"diffcxr.synthetic": "true", "Description": "contains synthetic (generated) radiographs"}


def _save(fig: Any, synthetic: bool) -> bytes:
    return png_bytes(fig, SYNTHETIC_META if synthetic else None)


def auc_chart(sets: dict[str, dict[str, Any]]) -> bytes:
    """Grouped bars: AUC per disease for each image set (undefined AUCs are left empty)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(11, 3.8), dpi=110)
    width = 0.8 / max(1, len(sets))
    x = np.arange(len(EVAL_DISEASES))
    for i, (name, result) in enumerate(sets.items()):
        per = result["auc"]["per_disease"]
        values = [per[d]["auc"] if per[d]["auc"] is not None else np.nan for d in EVAL_DISEASES]
        ax.bar(x + (i - (len(sets) - 1) / 2) * width, values, width, label=f"{name} (mAUC {result['mAUC']})")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, [d.replace(" ", "\n") for d in EVAL_DISEASES], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("AUC")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title("Per-disease AUC of the reference classifier against the report labels")
    fig.tight_layout()
    return _save(fig, synthetic=False)


def disease_grid(real: dict[str, np.ndarray], generated: dict[str, np.ndarray], per_disease: int) -> bytes:
    """One row per disease: real images with it (left), generated images for those reports (right)."""
    plt = pyplot()
    diseases = [d for d in EVAL_DISEASES if len(real.get(d, [])) or len(generated.get(d, []))]
    if not diseases:
        diseases = ["(none)"]
    cols = 2 * per_disease
    fig, axes = plt.subplots(len(diseases), cols, figsize=(1.1 * cols + 1.6, 1.15 * len(diseases) + 0.4), dpi=100,
                             squeeze=False)  # fmt: skip
    for r, disease in enumerate(diseases):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            pool = real.get(disease, []) if c < per_disease else generated.get(disease, [])
            k = c % per_disease
            if k < len(pool):
                ax.imshow(pool[k], cmap="gray", vmin=0, vmax=255)
            else:
                ax.axis("off")
            if r == 0 and k == 0:
                ax.set_title("real" if c < per_disease else "generated (synthetic)", fontsize=8, loc="left")
        axes[r][0].set_ylabel(disease, fontsize=7, rotation=0, ha="right", va="center")
    fig.tight_layout()
    return _save(fig, synthetic=True)


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return "✓" if value else "·"
    if isinstance(value, float):
        return f"{value:.5g}"
    return html.escape(str(value))


def table_html(table: dict[str, Any]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in table["columns"])
    body = "".join(
        "<tr class='{}'>".format("quoted" if row.get("source", "").startswith("quoted") else "measured")
        + "".join(f"<td>{_cell(row.get(c))}</td>" for c in table["columns"])
        + "</tr>"
        for row in table["rows"]
    )
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in table.get("notes", []))
    return (f"<h2>{html.escape(table['title'])}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
            f"</table><ul class='notes'>{notes}</ul>")  # fmt: skip


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}
td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f0f0f0} tr.quoted td{color:#666;font-style:italic}
td:first-child,th:first-child{text-align:left} ul.notes{font-size:12px;color:#555}
img{max-width:100%} pre{background:#f7f7f7;padding:1em;font-size:11px;overflow:auto}
.banner{background:#fff4d6;border:1px solid #e0c060;padding:.6em 1em}
"""


def render_html(results: dict[str, Any], tables: dict[str, dict[str, Any]], figures: dict[str, bytes]) -> str:
    """The whole report as one HTML string."""
    ident = results["classifier"]
    calibration = results.get("calibration", {})
    cal_rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{_cell(v)}</td></tr>" for k, v in calibration.items())
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Diff-CXR evaluation</title>",
        f"<style>{STYLE}</style></head><body>",
        "<h1>Diff-CXR evaluation report</h1>",
        "<p class='banner'>Generated images in this report are <b>synthetic</b>. Numbers marked <i>quoted</i> are "
        "the paper's, on its data and hardware; everything else was measured in this run.</p>",
        f"<p>Model <code>{html.escape(results['model'])}</code> · dataset <code>"
        f"{html.escape(str(results['dataset']['manifest']))}</code> ({results['dataset']['eval_reports']} held-out "
        f"reports × {results['dataset']['images_per_report']} images) · reference classifier <code>"
        f"{html.escape(ident['kind'])}</code> (sha256 {html.escape(str(ident.get('weights_sha256', ''))[:12])}…)</p>",
        "<h2>Per-disease AUC</h2>",
        _img(figures["auc"], "per-disease AUC"),
        "<h2>Evaluator calibration</h2><table><tbody>" + cal_rows + "</tbody></table>",
        "<ul class='notes'><li>Real held-out images scored as if generated should give the classifier's own test "
        "mAUC; the floor is the domain FID between two real sets (train, test) of the sizes shown; generated images "
        "scored against shuffled report labels should give mAUC ≈ 0.5; noise should give a FID far above the "
        "floor. FIDs compare one image per report with the real images of the same reports.</li></ul>",
    ]
    for key in ("table_v", "table_iv", "table_ii", "table_vi"):
        if key in tables:
            parts.append(table_html(tables[key]))
    parts += [
        "<h2>Real vs generated, per disease</h2>",
        _img(figures["grid"], "real vs generated per disease"),
        "<h2>Configuration and versions</h2>",
        f"<pre>{html.escape(json.dumps(results['provenance'], indent=2, default=str))}</pre>",
        f"<pre>{html.escape(json.dumps(results['config'], indent=2, default=str))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)
