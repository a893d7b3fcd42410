"""Tables, CSV, Markdown and figures for ``benchmarks/frontier.py`` (no model code); the
targets are in ``frontier_targets``.

Rows are dicts with at least ``suite``, ``method``, ``guide``, ``strategy`` and ``steps``; the
reference rows are ``data`` (held-out or exact samples), ``entropy_rate`` (oracle truth) and
``<model>/alone`` (the single-model baselines; ``<model>/generate`` in older CSVs).
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from frontier_targets import (  # noqa: F401  (the targets are part of the report's API)
    BASELINES,
    _find,
    _sampler,
    at_data_entropy,
    at_entropy,
    default_target,
    family,
    matched_target,
    oracle_target,
    pair_target,
    print_targets,
    sweeps,
    targets,
    temperature,
)

COLUMNS = ["suite", "method", "guide", "k", "strategy", "steps", "num_samples", "length",
           "gen_ppl", "gen_nll", "gen_nll_se", "entropy", "tv", "seconds", "cpu_seconds",
           "nfe_denoiser", "nfe_ar", "ar_tokens", "ess", "judged_tokens", "mean_length",
           "threads"]
GUIDE_COLORS = {"none": "0.25", "edlm2": "#9ecae1", "edlm4": "#4292c6", "edlm8": "#08519c",
                "dcd": "#e6550d", "dcd[context=full]": "#fdae6b", "dcd_is4": "#31a354",
                "speculative": "#756bb1", "apd": "#d6616b", "smc": "#8c6d31"}
STYLES = {"ancestral": ("-", "o"), "margin": ("--", "s"), "remdm": (":", "^"),
          "left_to_right": ("-.", "D"), "chunked": ("--", "v")}
OTHER_STYLE = (":", "x")  # any other conf/strategy option


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_csv(out: Path, rows: list[dict]) -> None:
    extra = sorted({k for r in rows for k in r} - set(COLUMNS))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS + extra, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _atomic(Path(out) / "frontier.csv", buf.getvalue())


def _value(text: str):
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_csv(path: Path) -> list[dict]:
    """Rows of a ``frontier.csv`` with numbers parsed back (empty cells -> None)."""
    with open(path, newline="") as f:
        return [{k: _value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def join_rows(tables: list[list[dict]]) -> list[dict]:
    """Rows of several ``frontier.csv`` files as one: the first of each (suite, method, steps)
    is kept, so the reference rows of later files (``data``, the same single-model rows)
    are not repeated."""
    seen, rows = set(), []
    for table in tables:
        for r in table:
            key = (r["suite"], r["method"], r.get("steps"))
            if key not in seen:
                seen.add(key)
                rows.append(r)
    return rows


def _fmt(v, spec: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def table(rows: list[dict], suite: str) -> list[str]:
    """Markdown lines: one row per point of the suite."""
    rows = [r for r in rows if r["suite"] == suite]
    truth = _find(rows, "entropy_rate")
    if suite == "oracle":
        head = ["gen NLL", "± se", "vs H", "TV", "entropy", "seconds"]
    else:
        head = ["gen PPL", "± se", "entropy", "seconds", "CPU s"]
    head = ["method", "steps", *head, "NFE", "AR fwd", "AR tok/sample", "ESS"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        se = r.get("gen_nll_se")
        if suite == "oracle":
            gap = r["gen_nll"] / truth["gen_nll"] - 1 if truth else None
            quality = [_fmt(r.get("gen_nll"), ".4f"), _fmt(se, ".4f"), _fmt(gap, "+.2%"),
                       _fmt(r.get("tv"), ".3f"), _fmt(r.get("entropy"), ".3f"),
                       _fmt(r.get("seconds"), ".2f")]
        else:
            se = None if se is None else r["gen_ppl"] * se
            quality = [_fmt(r.get("gen_ppl"), ".1f"), _fmt(se, ".1f"),
                       _fmt(r.get("entropy"), ".3f"), _fmt(r.get("seconds"), ".2f"),
                       _fmt(r.get("cpu_seconds"), ".2f")]
        cells = [r["method"], _fmt(r.get("steps"), "d"), *quality,
                 _fmt(r.get("nfe_denoiser"), "d"), _fmt(r.get("nfe_ar"), "d"),
                 _fmt(r.get("ar_tokens"), ".0f"), _fmt(r.get("ess"), ".2f")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def print_table(rows: list[dict]) -> None:
    for suite in dict.fromkeys(r["suite"] for r in rows):
        print(f"\n{suite} suite")
        print("\n".join(table(rows, suite)))


def pivot(rows: list[dict], suite: str) -> list[str]:
    """Markdown lines: one row per method, one column per step count. Default suite: gen PPL
    (wall-clock seconds); oracle: gen NLL relative to the entropy rate."""
    rows = [r for r in rows if r["suite"] == suite]
    truth = _find(rows, "entropy_rate")
    rows = [r for r in rows if _sampler(r)]
    steps = sorted({r["steps"] for r in rows})
    lines = ["| method | " + " | ".join(f"{s} step{'s' * (s > 1)}" for s in steps) + " |",
             "|" + "---|" * (len(steps) + 1)]
    for m in dict.fromkeys(r["method"] for r in rows):
        cells = []
        for s in steps:
            r = _find(rows, m, s)
            if r is None:
                cells.append("")
            elif suite == "oracle":
                cells.append(_fmt(r["gen_nll"] / truth["gen_nll"] - 1 if truth else None,
                                  "+.1%"))
            else:
                cells.append(f"{r['gen_ppl']:.0f} ({r['seconds']:.1f} s)")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def matched(rows: list[dict], suite: str) -> list[str]:
    """Markdown lines: each method's gen PPL ± se at the data's entropy, one column per step
    count (interpolated between its temperatures; empty where none bracket it). No lines when
    nothing is bracketed."""
    found = at_data_entropy([r for r in rows if r["suite"] == suite])
    if found is None or not found[1]:
        return []
    h, at = found
    steps = sorted({s for _, s in at})
    lines = [f"gen PPL at the data's entropy ({h:.3f}):", "",
             "| method | " + " | ".join(f"{s} step{'s' * (s > 1)}" for s in steps) + " |",
             "|" + "---|" * (len(steps) + 1)]
    for m in dict.fromkeys(name for name, _ in at):
        cells = [f"{at[m, s][0]:.0f} ± {at[m, s][1]:.0f}" if (m, s) in at else ""
                 for s in steps]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return lines


def write_markdown(out: Path, rows: list[dict]) -> None:
    parts = ["# Frontier results", ""]
    for t in targets(rows):
        parts += [f"- **{t['status']}** {t['target']}: {t['measured']}"]
    for suite in dict.fromkeys(r["suite"] for r in rows):
        parts += ["", f"## {suite} suite", "", *pivot(rows, suite), ""]
        if lines := matched(rows, suite):
            parts += [*lines, ""]
        parts += table(rows, suite)
    _atomic(Path(out) / "frontier.md", "\n".join(parts) + "\n")


def write_plots(out: Path, rows: list[dict]) -> list[Path]:
    """``frontier_<suite>.png``: y against steps, seconds and entropy, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    paths = []
    for suite in dict.fromkeys(r["suite"] for r in rows):
        srows = [r for r in rows if r["suite"] == suite]
        key = "gen_nll" if suite == "oracle" else "gen_ppl"
        fig, axes = plt.subplots(1, 3, figsize=(17, 5.2))
        # steps and wall-clock: temperature 1; entropy: every temperature, a method's points
        # at one step count joined across temperatures (its gen PPL-entropy frontier)
        methods = dict.fromkeys(r["method"] for r in srows if _sampler(r))
        for m in methods:
            pts = sorted((r for r in srows if r["method"] == m), key=lambda r: r["steps"])
            r0 = pts[0]
            ls, marker = STYLES.get(r0["strategy"], OTHER_STYLE)
            style = dict(color=GUIDE_COLORS.get(r0["guide"], "k"), ls=ls, marker=marker, ms=4,
                         lw=1.3, label=m)
            swept = temperature(r0) != 1.0 or any(
                family(r) == m and temperature(r) != 1.0 for r in srows)
            for ax, x in zip(axes, ("steps", "seconds", "entropy")):
                if temperature(r0) != 1.0 and ax is not axes[2]:
                    continue
                ax.plot([r[x] for r in pts], [r[key] for r in pts],
                        **(dict(style, ls="none") if swept and ax is axes[2] else style))
        for pts in sweeps(srows).values():
            pts = sorted(pts, key=lambda r: r["entropy"])
            if len(pts) > 1:
                axes[2].plot([r["entropy"] for r in pts], [r[key] for r in pts], "-", lw=0.9,
                             color=GUIDE_COLORS.get(pts[0]["guide"], "0.4"), alpha=0.7)
        for r in srows:
            if r["method"] in ("data", "entropy_rate"):
                ls = "--" if r["method"] == "data" else "-."
                for ax in axes[:2]:
                    ax.axhline(r[key], color="0.5", ls=ls, lw=1,
                               label=r["method"] if ax is axes[0] else None)
                if r.get("entropy") is not None:
                    axes[2].plot(r["entropy"], r[key], "k*", ms=12, label=r["method"])
            elif r.get("strategy") in BASELINES:
                for ax, x in zip(axes, ("steps", "seconds", "entropy")):
                    if temperature(r) != 1.0 and ax is not axes[2]:
                        continue
                    ax.plot(r[x], r[key], "P", ms=10 if temperature(r) == 1.0 else 6,
                            label=r["method"] if ax is axes[0] else None,
                            color="#756bb1" if r["guide"] == "ar" else "#dd1c77")
        for ax, x in zip(axes, ("steps", "seconds (wall-clock, one batch)", "unigram entropy")):
            ax.set_xlabel(x)
            ax.set_ylabel("gen NLL (exact, nats/token)" if suite == "oracle" else
                          "gen PPL (judge)")
            ax.grid(alpha=0.3)
        axes[0].set_xscale("log", base=2)
        axes[0].xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axes[1].set_xscale("log")
        axes[1].xaxis.set_minor_formatter(NullFormatter())
        if suite != "oracle":
            for ax in axes:
                ax.set_yscale("log")
        handles, labels = axes[0].get_legend_handles_labels()
        more = [(h, lab) for h, lab in zip(*axes[2].get_legend_handles_labels())
                if lab not in labels]
        fig.legend(handles + [h for h, _ in more], labels + [lab for _, lab in more],
                   loc="center left", bbox_to_anchor=(0.875, 0.5), fontsize=7, frameon=False)
        fig.suptitle(f"{suite} suite: quality against steps, wall-clock and entropy")
        fig.tight_layout(rect=(0, 0, 0.875, 1))
        path = Path(out) / f"frontier_{suite}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths
