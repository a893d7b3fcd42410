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
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = []
    for method in sorted({r["method"] for r in runs}):
        pts = sorted((r for r in runs if r["method"] == method), key=lambda r: r["num_steps"])
        xs, ys = [r["num_steps"] for r in pts], [r["gen_ppl"] for r in pts]
        err = _ppl_error(pts)
        line = ax1.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=method).lines[0]
        ax2.errorbar([r["entropy"] for r in pts], ys, yerr=err, marker="o", capsize=3,
                     color=line.get_color(), label=method)
        labels += [(str(r["num_steps"]), r["entropy"], r["gen_ppl"]) for r in pts]
    for r in data:
        ax1.axhline(r["gen_ppl"], color="gray", linestyle="--", label="data")
        ax2.scatter([r["entropy"]], [r["gen_ppl"]], marker="*", s=150, color="black",
                    label="data")
    for r, style in zip(alone, ("-.", ":", (0, (5, 1, 1, 1)))):
        label = f"{r['method']} ({r['num_steps']} AR steps)"
        line = ax1.axhline(r["gen_ppl"], color="dimgray", linestyle=style, label=label)
        ax2.scatter([r["entropy"]], [r["gen_ppl"]], marker="D", s=40, color="dimgray",
                    label=r["method"])
        ax2.annotate(r["method"], (r["entropy"], r["gen_ppl"]), fontsize=7, xytext=(3, -9),
                     textcoords="offset points", color=line.get_color())
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
    ax1.legend(fontsize=8)
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    _place_labels(fig, ax2, labels)
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


def _place_labels(fig, ax, labels: list[tuple[str, float, float]]) -> None:
    """Annotate points without overlapping text: each label takes the first of a few
    offsets around its point whose box clears the labels already placed."""
    fig.canvas.draw()  # fixes the axes' limits, so data map to final pixels
    placed = []
    offsets = [(3, 3), (3, -11), (-14, 3), (-14, -11), (3, 13), (-14, 13), (3, -21), (10, -5)]
    for text, x, y in labels:
        px, py = ax.transData.transform((x, y))
        w, h = 5.5 * len(text) + 2, 10.0
        for dx, dy in offsets:
            box = (px + dx, py + dy, px + dx + w, py + dy + h)
            if not any(_overlap(box, other) for other in placed):
                break
        placed.append(box)
        ax.annotate(text, (x, y), fontsize=7, xytext=(dx, dy), textcoords="offset pixels")


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


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
