"""The report as Markdown (report.md) plus PNGs: the trade-off plot, Fig. 4, Table 12."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from orchestrator.report.tables import DEFAULT_RANGES, Table

ORDER = ("compare", "curves", "table8", "table4", "table6", "table9_cal", "table9_casd", "fig4", "table12")


def fmt(v: Any, kind: str) -> str:
    """One cell; None (or NaN) is "—": absent, never 0."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if kind == "pct":
        return f"{v:+.2f} %"
    if kind == "pct_abs":
        return f"{v:.0f} %"
    if kind == "pts":
        return f"{v:+.2f}"
    if kind == "sd":
        return f"±{v:.2f}"
    if kind == "sci":
        return f"{v:.3g}"
    if kind == "miou":
        return f"{100 * v:.2f} %"
    if kind == "share":
        return f"{100 * v:.1f} %"
    if kind == "ratio":
        return f"{v:.2f}×"
    if kind == "ms":
        return f"{v:.2f}"
    if kind == "int":
        return f"{int(round(v)):,}"
    return str(v)


def table_md(t: Table) -> str:
    lines = [f"### {t.title}", "", f"*Paper: {t.paper_ref}.*", ""]
    if t.missing:
        lines += [f"**{t.missing}.**", ""]
        return "\n".join(lines)
    lines.append("| " + " | ".join(c.header for c in t.columns) + " |")
    lines.append("|" + "---|" * len(t.columns))
    for r in t.rows:
        if r.get("missing"):
            cells = [fmt(r.get(c.key), c.fmt) if c.key.startswith("paper") or c.fmt == "text" or c.key == "no"
                     else ("*" + r["missing"] + "*" if c.key == "n" else "") for c in t.columns]
        else:
            cells = [fmt(r.get(c.key), c.fmt) for c in t.columns]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += [f"* {n}" for n in t.notes]
    if t.notes:
        lines.append("")
    return "\n".join(lines)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def variations(t) -> list[str]:
    """What sets a trial apart from default DANCE besides its components: mode, p, ratio, ranges."""
    extra = []
    if t.mode != "co":
        extra.append(t.mode)
    uses_p = bool({"CAD", "CASD", "CAL"} & t.switches)
    if uses_p and t.p_mode != "proposed":
        extra.append(f"p={t.p_mode}")
    if "ANS" in t.switches and t.target_ratio is not None and abs(t.target_ratio - 0.5) > 1e-9:
        extra.append(f"r={t.target_ratio:g}")
    for key, switch in (("cal_range", "CAL"), ("casd_range", "CASD")):
        r = t.range_of(key)
        if switch in t.switches and r is not None and r != DEFAULT_RANGES[key]:
            extra.append(f"{switch.lower()}={r[1]:g}–{r[0]:g}")
    return extra


def plot_tradeoff(trials, path: Path) -> Path | None:
    """mIoU vs training FLOPs of every finished trial, labelled by components."""
    pts = [(t.metric("train_flops"), t.metric("miou"), t) for t in trials if t.status == "FINISHED"]
    pts = [p for p in pts if p[0] is not None and p[1] is not None]
    if not pts:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for f, m, t in pts:
        colour = "black" if t.is_baseline else ("tab:red" if t.is_dance else "tab:blue")
        ax.scatter(f, 100 * m, color=colour, s=18)
        extra = variations(t)
        ax.annotate(f"{t.components}{' ' + ' '.join(extra) if extra else ''} ({t.epochs} ep)", (f, 100 * m),
                    fontsize=6, xytext=(3, 2), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs (counted)")
    ax.set_ylabel("mIoU (%)")
    ax.set_title("every finished trial (black: baseline, red: DANCE)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_curves(t: Table, path: Path) -> Path | None:
    """The baseline's and DANCE's mean val mIoU by epoch."""
    if t.missing or not t.rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for key, label, style in (("base", "baseline", "o-k"), ("dance", "DANCE", "s-r")):
        pts = [(r["epoch"], 100 * r[key]) for r in t.rows if r.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), style, label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("val mIoU (%), mean over seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_fig4(t: Table, path: Path) -> Path | None:
    if t.missing or not t.rows:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.8), sharey=True)
    xs = [100 * r["ratio"] for r in t.rows]
    for ax, kind, title in ((axes[0], "ms", "multi-scale aggregation layers"),
                            (axes[1], "other", "other header layers")):
        ax.plot(xs, [100 * r[f"dance_{kind}"] for r in t.rows], "o-", color="tab:red", label="DANCE")
        ax.plot(xs, [100 * r[f"ans_{kind}"] for r in t.rows], "s--", color="tab:blue", label="ANS only")
        ax.set_title(title)
        ax.set_xlabel("target pruning ratio (%)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("pruned channels (%)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_table12(t: Table, path: Path) -> Path | None:
    if t.missing or not t.rows:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    xs = range(len(t.rows))
    ax.bar([x - 0.2 for x in xs], [r["base_ms"] for r in t.rows], 0.4, label="w/o DANCE", color="gray")
    ax.bar([x + 0.2 for x in xs], [r["dance_ms"] for r in t.rows], 0.4, label="w/ DANCE", color="tab:red")
    ax.set_xticks(list(xs))
    ax.set_xticklabels([r["part"].replace("header: ", "header:\n") for r in t.rows], fontsize=8)
    ax.set_ylabel("ms per image (CPU, 1 thread)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


VERDICT_MARK = {"holds": "✅ holds", "does not hold": "❌ does not hold", "holds partly": "◐ holds partly",
                "inconclusive": "〰 inconclusive", "not testable": "— not testable"}


def premise_md(report, tracking_uri: str) -> list[str]:
    """The premise figures of the report's data, first: whether DANCE can help there at all."""
    checks, missing = report.premise, report.premise_missing
    if not checks and not missing:
        return []
    lines = ["## The premise on this data", ""]
    lines += [f"* {c.line()}" for c in checks]
    lines += [f"* `{d}`: not checked. Before trusting a verdict below, run `dance data premise {d.partition(':')[2]} "
              f"--checkpoint <a baseline run> --tracking-uri {tracking_uri}` (docs/reproduce.md)" for d in missing]
    return lines + [""]


def write_report(report, out: Path, tracking_uri: str) -> Path:
    """Write ``out/report.md`` and its PNGs; returns the Markdown file."""
    out.mkdir(parents=True, exist_ok=True)
    tr = plot_tradeoff(report.trials, out / "tradeoff.png")
    f4 = plot_fig4(report.tables["fig4"], out / "fig4.png")
    cv = plot_curves(report.tables["curves"], out / "curves.png") if "curves" in report.tables else None
    t12 = plot_table12(report.tables["table12"], out / "table12.png")
    sweeps = ", ".join(f"`{s.sweep_id}` (parent run `{s.parent_run_id}`)" for s in report.sweeps)
    lines = ["# DANCE reproduction report", "",
             f"Sweep(s): {sweeps}; MLflow store `{tracking_uri}`.",
             f"{len(report.trials)} trial run(s), {len(report.trials) - len(report.excluded)} finished.", ""]
    if report.excluded:
        lines += ["Left out (not FINISHED): " + ", ".join(f"{t.trial_id} {t.components} ({t.status})"
                                                        for t in report.excluded) + ".", ""]
    lines += premise_md(report, tracking_uri)
    s = report.setting
    if s is not None:
        lines += [f"Main setting: {s.epochs} epochs"
                  + (f", ANS target ratio {s.ratio:g}" if s.ratio is not None else "")
                  + (f", dropping trials at drop_budget {s.drop_budget}" if s.drop_budget else "")
                  + (", adaptation runs (train.init_checkpoint): set beside the paper's Table 3" if s.adaptation
                     else ", full training") +
                  ". Every table compares trials of one setting (same model and its options, backbone weights, data, "
                  "augmentation, initial checkpoint, lr, batch, "
                  "stages, λ, CAL normaliser); each table's trials are found by their configs. Seeds are replicates: "
                  "a row is the mean over its seeds, with their spread.", ""]
        if report.start:
            lines += [f"Start: {report.start}.", ""]
    lines += ["## Claims", "", "| paper's claim | verdict | numbers |", "|---|---|---|"]
    for c in report.claims:
        lines.append(f"| {c.text} | {VERDICT_MARK.get(c.verdict, c.verdict)} | {c.evidence} |")
    lines += ["", "mIoU claims compare rows paired by seed: a claim holds or does not hold only when the mean "
              "paired difference lies outside ±2 standard errors, and is inconclusive otherwise (always with one "
              "seed, whose spread is unknown). Arms that differ by more than 10 % in training FLOPs say so.", "",
              "## Tables", ""]
    for key in ORDER:
        if key in report.tables:
            lines.append(table_md(report.tables[key]))
            if key == "curves" and cv:
                lines += [f"![val curves]({cv.name})", ""]
            if key == "fig4" and f4:
                lines += [f"![Fig. 4]({f4.name})", ""]
            if key == "table12" and t12:
                lines += [f"![Table 12]({t12.name})", ""]
    if tr:
        lines += ["## Every trial", "", f"![mIoU vs training FLOPs]({tr.name})", ""]
    lines += ["## Trials", "", "| trial | components | settings (vs default DANCE) | epochs | status | "
                               "mIoU | train FLOPs | infer FLOPs/img | run |",
              "|---|---|---|---|---|---|---|---|---|"]
    for t in report.trials:
        lines.append(f"| {t.trial_id} | {t.components} | {' '.join(variations(t)) or '—'} | "
                     f"{t.epochs} | {t.status} | {fmt(t.metric('miou'), 'miou')} | "
                     f"{fmt(t.metric('train_flops'), 'sci')} | "
                     f"{fmt(t.metric('infer_flops_per_image'), 'sci')} | `{t.run_id}` |")
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
