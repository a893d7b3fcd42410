"""Collect a sweep's ``metrics.jsonl`` files into ``results.csv`` and draw ``frontier.png``.

    python -m experiments.plot multirun/shakespeare            # what the sweep callback does
    python -m experiments.plot multirun/shakespeare --out docs/frontier.png

The figure has two panels: gen PPL against steps per method (log-log), and gen PPL against
unigram entropy (each point one step count; the held-out data as a star; single-model
baselines, ``experiments.baselines``, as horizontal lines and diamonds). Bars span ± one
standard error of the gen NLL (``gen_nll_se``), i.e. exp(NLL ± SE). A method is one job of
the sweep, named by its overrides (e.g. ``guide=edlm``); a baseline is ``<model> alone``.
``results.csv`` is rebuilt from the run directories each time: one row per (method, step
count), whatever a run's files repeat.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
from pathlib import Path

from experiments.store import atomic_write, read_jsonl

FIRST_COLUMNS = ["method", "guide", "strategy", "num_steps", "gen_ppl", "entropy", "gen_nll",
                 "gen_nll_se", "tv", "mauve", "nfe_denoiser", "nfe_ar", "ar_tokens", "seconds",
                 "samples_per_second", "num_samples", "length", "seed", "convention",
                 "device", "dtype", "duet_version", "git_commit", "torch_version",
                 "transformers_version"]


def _overrides(job_dir: Path, sweep_dir: Path) -> list[str]:
    """The job's command-line overrides (from Hydra's record, else its folder name)."""
    saved = job_dir / ".hydra" / "overrides.yaml"
    if saved.exists():
        from omegaconf import OmegaConf

        return [str(o) for o in OmegaConf.load(saved)]
    rel = job_dir.relative_to(sweep_dir).as_posix()
    return [] if rel in (".", "default") else rel.split(",")


def _methods(job_dirs: list[Path], sweep_dir: Path) -> dict[Path, str]:
    """Name each job by the overrides that differ between the sweep's jobs."""
    overrides = {d: _overrides(d, sweep_dir) for d in job_dirs}
    common = set.intersection(*(set(o) for o in overrides.values())) if overrides else set()
    names = {}
    for d, items in overrides.items():
        varying = [o for o in items if o not in common and not o.startswith("hydra")]
        names[d] = ",".join(varying) or (d.name if d != sweep_dir else "default")
    return names


def collect(sweep_dir: str | Path) -> list[dict]:
    """Every metrics line under ``sweep_dir`` (plus one ``data`` row per distinct reference),
    each with a ``method`` column."""
    sweep_dir = Path(sweep_dir)
    rows, refs = [], {}
    paths = sorted(sweep_dir.rglob("metrics.jsonl"))
    methods = _methods([p.parent for p in paths], sweep_dir)
    for path in paths:
        method = methods[path.parent]
        seen = set()
        for line in read_jsonl(path)[0]:
            if line.get("num_steps") in seen:
                continue  # a repeated line (an older, unlocked writer): the first one counts
            seen.add(line.get("num_steps"))
            rows.append({"method": method, **line})
        ref = path.parent / "reference.json"
        if ref.exists():
            data = json.loads(ref.read_text())
            key = (data.get("judge"), data.get("num_samples"))
            refs.setdefault(key, {"method": "data", "guide": "data", **data})
    rows.sort(key=lambda r: (r["method"], r.get("num_steps") or 0))
    return rows + _baselines(paths) + list(refs.values())


def _baselines(metric_paths: list[Path]) -> list[dict]:
    """Each distinct single-model row (``experiments.baselines``) once, as ``<name> alone``.

    Every job of a sweep may draw the same baseline (same model, seed, count and length give
    the same samples), so rows are keyed by what determines them.
    """
    found = {}
    for path in metric_paths:
        for line in read_jsonl(path.parent / "baselines.jsonl")[0]:
            key = tuple(str(line.get(k)) for k in ("baseline", "model", "judge", "num_samples",
                                                    "length", "seed", "temperature", "top_p"))
            found.setdefault(key, {"method": f"{line['baseline']} alone", **line})
    return sorted(found.values(), key=lambda r: r["method"])


def write_csv(rows: list[dict], path: str | Path) -> None:
    columns = [c for c in FIRST_COLUMNS if any(c in r for r in rows)]
    columns += sorted({k for r in rows for k in r} - set(columns))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    atomic_write(Path(path), buf.getvalue())


def draw(rows: list[dict], path: str | Path, title: str | None = None) -> None:
    """Write the two-panel frontier figure (PNG) atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    runs = [r for r in rows if r["method"] != "data" and not r.get("baseline")
            and r.get("gen_ppl") is not None]
    alone = [r for r in rows if r.get("baseline") and r.get("gen_ppl") is not None]
    data = [r for r in rows if r["method"] == "data" and r.get("gen_ppl") is not None]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    labels, marks, paths = [], [], []  # text at a point of ax2; what the text must not cover
    for method in sorted({r["method"] for r in runs}):
        pts = sorted((r for r in runs if r["method"] == method), key=lambda r: r["num_steps"])
        xs, ys = [r["num_steps"] for r in pts], [r["gen_ppl"] for r in pts]
        err = _ppl_error(pts)
        line = ax1.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=method).lines[0]
        es = [r["entropy"] for r in pts]
        ax2.errorbar(es, ys, yerr=err, marker="o", capsize=3, color=line.get_color(),
                     label=method)
        labels += [(str(r["num_steps"]), e, y, line.get_color()) for r, e, y in zip(pts, es, ys)]
        marks += _error_marks(es, ys, err)
        paths.append((es, ys))
    for r in data:
        ax1.axhline(r["gen_ppl"], color="gray", linestyle="--", label="data")
        ax2.scatter([r["entropy"]], [r["gen_ppl"]], marker="*", s=150, color="black",
                    label="data")
        labels.append(("data", r["entropy"], r["gen_ppl"], "black"))
        marks += _error_marks([r["entropy"]], [r["gen_ppl"]], None, size=7)
    for r, style in zip(alone, ("-.", ":", (0, (5, 1, 1, 1)))):
        label = f"{r['method']} ({r['num_steps']} AR steps)"
        line = ax1.axhline(r["gen_ppl"], color="dimgray", linestyle=style, label=label)
        ax2.scatter([r["entropy"]], [r["gen_ppl"]], marker="D", s=40, color="dimgray",
                    label=r["method"])
        labels.append((r["method"], r["entropy"], r["gen_ppl"], line.get_color()))
        marks += _error_marks([r["entropy"]], [r["gen_ppl"]], None)
    ppl = [r["gen_ppl"] for r in runs + data + alone]
    yscale = "log" if ppl and max(ppl) > 3 * min(ppl) else "linear"  # log ticks need range
    ax1.set(xscale="log", yscale=yscale, xlabel="denoising steps", ylabel="gen PPL (judge)",
            title="gen PPL vs steps")
    ax2.set(yscale=yscale, xlabel="unigram entropy per sample (nats)", ylabel="gen PPL",
            title="gen PPL vs entropy (labels: steps)")
    if runs:
        steps = sorted({r["num_steps"] for r in runs})
        ax1.set_xticks(steps, [str(s) for s in steps])
    if yscale == "log":
        for ax in (ax1, ax2):
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ScalarFormatter())
            ax.yaxis.set_minor_formatter(NullFormatter())
    ax1.xaxis.set_minor_formatter(NullFormatter())
    ax1.legend(fontsize=8)  # the right panel shares its colours; its points are labelled
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _place_labels(fig, ax2, labels, marks, paths)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(buf.getvalue())
    tmp.replace(path)


def _ppl_error(pts: list[dict]):
    """(2, n) distances from gen PPL to exp(NLL - SE) and exp(NLL + SE), or None."""
    if not any(r.get("gen_nll_se") is not None for r in pts):
        return None
    lo, hi = [], []
    for r in pts:
        se = r.get("gen_nll_se") or 0.0
        nll = math.log(r["gen_ppl"])
        lo.append(r["gen_ppl"] - math.exp(nll - se))
        hi.append(math.exp(nll + se) - r["gen_ppl"])
    return [lo, hi]


def _error_marks(xs, ys, err, size: float = 7.0) -> list[tuple]:
    """Each point's marker and error bar, as (x, y_low, y_high, half-width in pixels)."""
    lo, hi = err if err is not None else ([0.0] * len(xs), [0.0] * len(xs))
    return [(x, y - a, y + b, size) for x, y, a, b in zip(xs, ys, lo, hi)]


# Where a label may sit around its point, nearest first: (dx, dy) in pixels from the point
# to the text's anchor, and the anchor (horizontal, vertical alignment).
_SPOTS = [(dx * r, dy * r, ha, va) for r in (7, 13, 22, 34)
          for dx, dy, ha, va in ((1, 0.4, "left", "bottom"), (1, -0.4, "left", "top"),
                                 (-1, 0.4, "right", "bottom"), (-1, -0.4, "right", "top"),
                                 (0, 1.2, "center", "bottom"), (0, -1.2, "center", "top"),
                                 (1.2, 0, "left", "center"), (-1.2, 0, "right", "center"))]


def _place_labels(fig, ax, labels: list[tuple], marks: list[tuple], paths=()) -> None:
    """Annotate points so that no text covers another, a marker, an error bar, a line
    (``paths``: each method's (xs, ys)) or the axes' edge: each label, in turn, takes the
    nearest spot around its point that is clear (its drawn extent measured), else the spot
    that covers least."""
    fig.canvas.draw()  # fixes the axes' limits, so data map to final pixels
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    blocked = []
    for x, y0, y1, half in marks:
        (px, py0), (_, py1) = ax.transData.transform([(x, y0), (x, y1)])
        blocked.append((px - half, min(py0, py1) - half, px + half, max(py0, py1) + half))
    for xs, ys in paths:  # each segment as a chain of small squares
        pts = ax.transData.transform(list(zip(xs, ys)))
        for (ax0, ay0), (ax1, ay1) in zip(pts[:-1], pts[1:]):
            n = max(1, int(math.hypot(ax1 - ax0, ay1 - ay0) / 3))
            for i in range(n + 1):
                qx, qy = ax0 + (ax1 - ax0) * i / n, ay0 + (ay1 - ay0) * i / n
                blocked.append((qx - 1.5, qy - 1.5, qx + 1.5, qy + 1.5))
    placed = []
    for text, x, y, color in labels:
        note = ax.annotate(text, (x, y), fontsize=7, color=color, textcoords="offset pixels",
                           xytext=_SPOTS[0][:2], annotation_clip=False)
        best = None
        for dx, dy, ha, va in _SPOTS:
            note.xyann = (dx, dy)
            note.set_ha(ha)
            note.set_va(va)
            e = note.get_window_extent(renderer)
            box = (e.x0 - 1, e.y0 - 1, e.x1 + 1, e.y1 + 1)
            cost = sum(_area(box, other) for other in placed + blocked)
            cost += (box[2] - box[0]) * (box[3] - box[1]) - _area(box, tuple(frame.extents))
            if best is None or cost < best[0]:
                best = (cost, (dx, dy, ha, va), box)
            if cost == 0:
                break
        dx, dy, ha, va = best[1]
        note.remove()
        far = abs(dx) + abs(dy) > 25  # far from its point: a leader line says whose it is
        ax.annotate(text, (x, y), fontsize=7, color=color, textcoords="offset pixels",
                    xytext=(dx, dy), ha=ha, va=va, annotation_clip=False,
                    arrowprops=dict(arrowstyle="-", lw=0.5, color=color, shrinkA=1,
                                    shrinkB=3) if far else None)
        placed.append(best[2])


def _area(a, b) -> float:
    """Area of the overlap of two boxes (x0, y0, x1, y1)."""
    return max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))


def summarize_sweep(sweep_dir: str | Path, figure: str | Path | None = None) -> list[dict]:
    """Write ``results.csv`` and ``frontier.png`` (or ``figure``) for ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    write_csv(rows, sweep_dir / "results.csv")
    if any(r.get("task") == "lm_eval" for r in rows):  # task accuracy against throughput
        from experiments.lm_eval_plot import draw_frontier

        draw_frontier(rows, figure or sweep_dir / "frontier.png", title=sweep_dir.name)
    else:
        draw(rows, figure or sweep_dir / "frontier.png", title=sweep_dir.name)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir")
    parser.add_argument("--out", default=None, help="figure path (default: in the sweep dir)")
    args = parser.parse_args(argv)
    rows = summarize_sweep(args.sweep_dir, args.out)
    print(f"{len(rows)} rows -> {Path(args.sweep_dir) / 'results.csv'}")


if __name__ == "__main__":
    main()
