"""An evaluation's results as JSON, a Markdown table and PNG plots (matplotlib, no display needed)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from xmodal.evaluation.captioning import CAPTION_METRICS
from xmodal.evaluation.runner import EvalReport

COLUMNS = ("R@1", "R@5", "R@10", "mAP@10", "nDCG@10")


def write_json(report: EvalReport, path: Path, extra: dict[str, Any] | None = None) -> None:
    path.write_text(json.dumps({**(extra or {}), **asdict(report)}, indent=2) + "\n", encoding="utf-8")


def markdown(report: EvalReport) -> str:
    """One table per direction: a row per source, the metrics as columns."""
    lines = [
        f"{report.indexed} of {report.items} items indexed"
        + (f", {len(report.failed)} failed" if report.failed else "")
    ]
    for direction, sources in report.results.items():
        queries = int(next(iter(sources.values()))["queries"]) if sources else 0  # type: ignore[arg-type]
        captioned = any(metric in summary for summary in sources.values() for metric in CAPTION_METRICS)
        columns = COLUMNS + (CAPTION_METRICS if captioned else ())  # image -> text lookups also score as captions
        lines += ["", f"### {direction} ({queries} queries)", "", "| source | " + " | ".join(columns) + " |"]
        lines.append("| --- |" + " ---: |" * len(columns))
        for source, summary in sources.items():
            cells = [f"{float(summary[c]):.3f}" if c in summary else "-" for c in columns]  # type: ignore[arg-type]
            lines.append(f"| {source} | " + " | ".join(cells) + " |")
    if report.unavailable:
        lines += ["", "Not measured: " + "; ".join(f"{s} ({why})" for s, why in sorted(report.unavailable.items()))]
    return "\n".join(lines) + "\n"


def plot(report: EvalReport, folder: Path) -> list[Path]:
    """``recall_at_k.png`` (Recall@K curves per direction and source) and ``sources.png`` (R@10 bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directions = list(report.results)
    if not directions:
        return []
    written = []
    figure, axes = plt.subplots(1, len(directions), figsize=(4.5 * len(directions), 3.6), squeeze=False)
    for axis, direction in zip(axes[0], directions, strict=True):
        for source, summary in report.results[direction].items():
            curve = summary["recall_curve"]
            assert isinstance(curve, list)
            axis.plot(range(1, len(curve) + 1), curve, marker="o", markersize=3, label=source)
        axis.set(title=direction, xlabel="K", ylabel="Recall@K", ylim=(0, 1.02))
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.tight_layout()
    written.append(folder / "recall_at_k.png")
    figure.savefig(written[-1], dpi=110)
    plt.close(figure)

    sources = sorted({source for by_source in report.results.values() for source in by_source})
    figure, axis = plt.subplots(figsize=(max(6.0, 1.2 * len(directions) * len(sources) / 2), 3.8))
    width = 0.8 / max(1, len(sources))
    for offset, source in enumerate(sources):
        values = [float(report.results[d].get(source, {}).get("R@10", 0.0)) for d in directions]  # type: ignore[arg-type]
        axis.bar([i + offset * width for i in range(len(directions))], values, width, label=source)
    axis.set_xticks([i + 0.4 - width / 2 for i in range(len(directions))], directions, fontsize=8)
    axis.set(ylabel="Recall@10", ylim=(0, 1.02), title="Recall@10 per source")
    axis.legend(fontsize=7, ncols=2)
    figure.tight_layout()
    written.append(folder / "sources.png")
    figure.savefig(written[-1], dpi=110)
    plt.close(figure)
    return written


def write_all(report: EvalReport, folder: Path, extra: dict[str, Any] | None = None) -> list[Path]:
    """results.json, results.md and the plots in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    write_json(report, folder / "results.json", extra)
    (folder / "results.md").write_text(markdown(report), encoding="utf-8")
    return [folder / "results.json", folder / "results.md", *plot(report, folder)]
