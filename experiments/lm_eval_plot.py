"""``frontier.png`` of a ``task=lm_eval`` sweep: task accuracy against throughput.

Left: accuracy (± one standard error, lm-eval's) against generated tokens per second, one
line per method (the sweep's varying overrides), each point labelled with its step count.
Right: the same accuracy against the number of denoising steps. The metric is the metrics
line's ``metric`` (``lm_eval.metric``, else the first task's first metric).
"""

from __future__ import annotations

import io
from pathlib import Path


def draw_frontier(rows: list[dict], path: str | Path, title: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [r for r in rows if r.get("task") == "lm_eval" and r.get("accuracy") is not None]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method in sorted({r["method"] for r in runs}):
        pts = sorted((r for r in runs if r["method"] == method), key=lambda r: r["num_steps"])
        ys = [r["accuracy"] for r in pts]
        err = [r.get("accuracy_se") or 0.0 for r in pts]
        fast = [r for r in pts if r.get("tokens_per_second")]
        if fast:
            line = ax1.errorbar([r["tokens_per_second"] for r in fast],
                                [r["accuracy"] for r in fast],
                                yerr=[r.get("accuracy_se") or 0.0 for r in fast], marker="o",
                                capsize=3, label=method).lines[0]
            for r in fast:
                ax1.annotate(str(r["num_steps"]), (r["tokens_per_second"], r["accuracy"]),
                             fontsize=7, xytext=(3, 3), textcoords="offset points",
                             color=line.get_color())
        ax2.errorbar([r["num_steps"] for r in pts], ys, yerr=err, marker="o", capsize=3,
                     label=method)
    metrics = sorted({str(r.get("metric")) for r in runs})
    label = metrics[0] if len(metrics) == 1 else "accuracy"
    if any(r.get("tokens_per_second") for r in runs):
        ax1.set_xscale("log")
    ax1.set(xlabel="generated tokens per second", ylabel=label,
            title="accuracy vs throughput (labels: steps)")
    ax2.set(xscale="log", xlabel="denoising steps", ylabel=label, title="accuracy vs steps")
    if runs:
        steps = sorted({r["num_steps"] for r in runs})
        ax2.set_xticks(steps, [str(s) for s in steps])
    for ax in (ax1, ax2):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)
