"""One self-contained HTML report of an evaluation, pictures embedded."""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from siamkit._atomic import atomic_write
from siamkit._version import __version__
from siamkit.evaluation.runner import Evaluation, check_report_folder
from siamkit.model_folder.layout import PLOT_FILE
from siamkit.thresholds import unreliable_reason

REPORT_FILE = "report.html"

_CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif;
       margin: 0 auto; max-width: 1100px; padding: 24px; color: #1f2933; background: #fff; }
h1 { margin-bottom: 4px; }
h2 { border-bottom: 2px solid #e4e7eb; padding-bottom: 4px; margin-top: 36px; }
.sub { color: #616e7c; margin-top: 0; }
table { border-collapse: collapse; margin: 12px 0; }
th, td { border: 1px solid #cbd2d9; padding: 6px 12px; text-align: left; }
th { background: #f5f7fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0; }
.card { border: 1px solid #cbd2d9; border-radius: 8px; padding: 12px 18px; min-width: 130px; }
.card .v { font-size: 26px; font-weight: 600; } .card .k { color: #616e7c; font-size: 13px; }
figure { margin: 16px 0; } figure img { max-width: 100%; border: 1px solid #e4e7eb; }
.figs { display: flex; flex-wrap: wrap; gap: 0 24px; align-items: flex-start; }
.figs figure { flex: 1 1 320px; max-width: 520px; }
figcaption { color: #616e7c; font-size: 14px; }
.warn { color: #b54708; } .ok { color: #2e7d32; } .bad { color: #c62828; }
footer { margin-top: 48px; color: #616e7c; font-size: 13px; }
"""


@dataclass(frozen=True)
class Section:
    """An extra report section: a title and trusted HTML (e.g. the demo's gallery search).

    Examples:
        >>> Section("Notes", "<p>Trained on 26 people.</p>").title
        'Notes'
    """

    title: str
    html: str


def embedded_image(path: str | os.PathLike, caption: str) -> str:
    """A PNG file as an HTML figure with the picture inlined (a data URI) and a caption.

    Examples:
        >>> html_text = embedded_image("roc.png", "ROC curve")  # doctest: +SKIP
    """
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """An HTML table; numbers are right-aligned, everything is escaped."""

    def cell(value: object) -> str:
        numeric = isinstance(value, (int, float))
        text = f"{value:.4f}" if isinstance(value, float) else str(value)
        return f'<td class="num">{text}</td>' if numeric else f"<td>{html.escape(text)}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    thead = f"<thead><tr>{head}</tr></thead>" if any(header) else ""
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table>{thead}<tbody>{body}</tbody></table>"


def _card(key: str, value: str) -> str:
    return (
        f'<div class="card"><div class="v">{html.escape(value)}</div>'
        f'<div class="k">{html.escape(key)}</div></div>'
    )


def _verification(ev: Evaluation) -> str:
    v = ev.verification
    rows = [
        ("ROC AUC", v.auc),
        ("EER", f"{100 * v.eer:.2f}%"),
        (f"accuracy at threshold {ev.threshold:.4f}", f"{100 * ev.accuracy:.2f}%"),
        (
            f"{len(ev.kfold.folds)}-fold accuracy (threshold fitted on the other folds)",
            f"{100 * ev.kfold.mean:.2f}% ± {100 * ev.kfold.std:.2f}",
        ),
        ("genuine / impostor pairs", f"{v.num_genuine} / {v.num_impostor}"),
    ]
    tar_rows = [
        (
            f"{t.target_far:g}",
            f"{100 * t.tar:.2f}%",
            f"{t.far:.5f}",
            t.threshold,
            t.num_impostor,
            "yes" if t.reliable else f"no ({unreliable_reason(t)})",
        )
        for t in ev.tar_at_far
    ]
    return (
        table(["metric", "value"], rows)
        + f'<p class="sub">Threshold: {html.escape(ev.threshold_source)}.</p>'
        + "<h3>TAR at fixed FAR</h3>"
        + table(
            ["target FAR", "TAR", "FAR reached", "threshold", "impostor pairs", "reliable"],
            tar_rows,
        )
    )


def _identification(ev: Evaluation) -> str:
    ident = ev.identification
    rows = [
        ("rank-1 (leave-one-out)", ident["rank1"]),
        ("rank-5", ident["rank5"]),
        ("precision@1", ident["precision_at_1"]),
        ("MAP@R", ident["mean_average_precision_at_r"]),
    ]
    text = table(["metric", "value"], rows)
    if ev.open_set is not None:
        o = ev.open_set
        text += (
            "<h3>Open set: one image of half the people enrolled, the rest unknown</h3>"
            + table(
                ["metric", "value"],
                [
                    ("threshold", o.threshold),
                    (
                        "detection and identification rate (enrolled probes)",
                        o.detection_identification_rate,
                    ),
                    ("unknown probes rejected", o.unknown_rejection_rate),
                    ("enrolled / unknown probes", f"{o.num_known} / {o.num_unknown}"),
                ],
            )
        )
    return text + _open_set_search(ev)


def _open_set_search(ev: Evaluation) -> str:
    search = ev.open_set_search
    if search is None:
        return ""
    rows = [
        (
            f"{f.target_fpir:g}",
            "n/a" if f.fnir is None else f"{100 * f.fnir:.2f}%",
            f"{f.fpir:.4f}",
            f.threshold,
            f"{f.num_mated} / {f.num_non_mated}",
            "yes" if f.reliable else f"no ({unreliable_reason(f)})",
        )
        for f in search.fnir_at_fpir
    ]
    return (
        f"<h3>Open-set search: FNIR at fixed FPIR ({search.enrolled_people} people enrolled "
        f"with {search.gallery_images} images, {search.unknown_people} kept out)</h3>"
        + table(
            [
                "target FPIR",
                "FNIR",
                "FPIR reached",
                "threshold",
                "known / stranger searches",
                "reliable",
            ],
            rows,
        )
        + '<p class="sub">FPIR: share of searches by strangers matched to someone; FNIR: '
        "share of enrolled people rejected or named wrongly, at the threshold fitted on "
        "these searches.</p>"
    )


def _few_shot(ev: Evaluation) -> str:
    if not ev.few_shot:
        return ""
    rows = [
        (f"{r.n_way}-way {r.k_shot}-shot", f"{100 * r.accuracy:.2f}%",
         "" if r.ci95 is None else f"± {100 * r.ci95:.2f}%", f"{r.episodes:,}", r.source)
        for r in ev.few_shot
    ]  # fmt: skip
    note = (
        "<p>Each query is given the class whose support images (their mean embedding) are "
        "nearest; 95% interval over the episodes.</p>"
    )
    return (
        "<h2>Few-shot classification</h2>"
        + note
        + table(["task", "accuracy", "95% interval", "episodes", "episodes from"], rows)
    )


def _alignment(ev: Evaluation) -> str:
    stats = ev.alignment
    if stats is None:
        return ""
    rows = [
        ("images aligned", stats.total),
        ("a face found", stats.aligned),
        ("of which only on a second, more permissive look", stats.weak),
        ("no face found: aligned whole (on_missing=fallback)", stats.fallback),
        ("no face found: skipped (on_missing=skip)", stats.missing),
        ("several faces (the aligner's rule chose one)", stats.several),
    ]
    text = table(["", "images"], rows)
    if ev.skipped_images:
        shown = ", ".join(Path(p).name for p in ev.skipped_images[:20])
        more = f" and {len(ev.skipped_images) - 20} more" if len(ev.skipped_images) > 20 else ""
        text += (
            f'<p class="sub">Left out of every metric, with their pairs: '
            f"{html.escape(shown)}{more}.</p>"
        )
    return "<h2>Face alignment</h2>" + text


def _skipped_files(ev: Evaluation) -> str:
    if not ev.skipped_files:
        return ""
    rows = [(item.path, item.reason) for item in ev.skipped_files[:50]]
    more = len(ev.skipped_files) - len(rows)
    note = f'<p class="sub">and {more} more (see evaluation.json).</p>' if more > 0 else ""
    return (
        "<h2>Files left out</h2>"
        '<p class="sub">Files and links of the people\'s folders that are not in any metric:'
        "</p>" + table(["file", "why"], rows) + note
    )


def _training(model_dir: Path | None) -> str:
    if model_dir is None or not (model_dir / PLOT_FILE).is_file():
        return ""
    return "<h2>Training</h2>" + embedded_image(
        model_dir / PLOT_FILE, "Training loss and validation AUC / EER per epoch"
    )


_PICTURES = {
    "roc": "ROC curve (FAR on a log scale)",
    "det": "DET curve of open-set search (FNIR against FPIR, log scales)",
    "histograms": "Distances of genuine and impostor pairs, with the decision threshold",
    "cmc": "Cumulative match characteristic (leave-one-out identification)",
    "pairs": "Example pairs with their dissimilarity; green: the call was right, red: wrong",
    "retrieval": "Each query beside its five nearest faces; green: same person, red: another",
}


def _cards(ev: Evaluation) -> str:
    v = ev.verification
    return "".join(
        [
            _card("ROC AUC", f"{v.auc:.4f}"),
            _card("EER", f"{100 * v.eer:.2f}%"),
            _card("rank-1", f"{ev.identification['rank1']:.3f}"),
            _card("accuracy", f"{100 * ev.accuracy:.2f}%"),
        ]
    )


def _overview(ev: Evaluation) -> str:
    return table(
        ["", ""],
        [
            ("model", ev.model),
            ("data", ev.data),
            ("geometry", ev.metric),
            ("images / people", f"{ev.num_images} / {ev.num_people}"),
            ("pairs", ev.num_pairs),
        ],
    )


def _figures(out: Path, ev: Evaluation) -> str:
    small, large = ("roc", "det", "histograms", "cmc"), ("pairs", "retrieval")

    def pictures(names: tuple[str, ...]) -> str:
        return "".join(
            embedded_image(out / ev.figures[k], _PICTURES[k]) for k in names if k in ev.figures
        )

    return f'<div class="figs">{pictures(small)}</div>{pictures(large)}'


def write_report(
    evaluation: Evaluation,
    out_dir: str | os.PathLike,
    model_dir: str | os.PathLike | None = None,
    sections: Sequence[Section] = (),
    title: str = "siamkit evaluation report",
) -> Path:
    """Write ``report.html`` (pictures embedded as data URIs) into ``out_dir``.

    ``evaluation`` must come from :func:`~siamkit.evaluation.evaluate_encoder`
    with the same ``out_dir`` (which drew the pictures).

    Raises:
        ConfigError: ``out_dir`` is a file, or holds files that are not an
            evaluation report's (see :func:`~siamkit.evaluation.runner.check_report_folder`).

    Examples:
        >>> path = write_report(result, "eval/", model_dir="runs/faces")  # doctest: +SKIP
    """
    out = check_report_folder(out_dir)
    ev = evaluation
    cards, overview, figures = _cards(ev), _overview(ev), _figures(out, ev)
    body = (
        f"<h1>{html.escape(title)}</h1>"
        f'<p class="sub">siamkit {__version__}</p>'
        f'<div class="cards">{cards}</div>'
        f"<h2>Overview</h2>{overview}"
        f"<h2>Verification (1:1)</h2>{_verification(ev)}"
        f"<h2>Identification (1:N)</h2>{_identification(ev)}{_few_shot(ev)}"
        f"{_alignment(ev)}{_skipped_files(ev)}"
        f"<h2>Pictures</h2>{figures}"
        + "".join(f"<h2>{html.escape(s.title)}</h2>{s.html}" for s in sections)
        + _training(Path(model_dir) if model_dir else None)
        + "<footer>Made by siamkit. Face images of the AT&amp;T database were taken at the "
        "Olivetti Research Laboratory, Cambridge, UK.</footer>"
    )
    page = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>{body}</body></html>"
    )
    path = out / REPORT_FILE
    with atomic_write(path, "w") as handle:
        handle.write(page)
    return path
