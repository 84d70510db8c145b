"""``pareto.html``: the sweep's front as an interactive figure that MLflow's artifact view renders.

One panel per cost objective (mIoU against it), every trial a point: hovering shows the trial's
name (its swept values), status, rank and figures; clicking opens its run in the MLflow UI (the
artifact view shows the file in a frame of the UI's own origin). plotly writes the file with its
JavaScript inside: nothing is fetched when it is viewed, offline included.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from orchestrator.runs.schema import IS_PARETO, PARETO_RANK

# plotly is imported inside write_front_html: only a sweep's end draws the figure.

CLICK_OPENS_RUN = """
var plot = document.getElementById('{plot_id}');
plot.on('plotly_click', function (event) {
  var hash = '#/experiments/' + event.points[0].customdata[0] + '/runs/' + event.points[0].customdata[1];
  try { window.top.location.hash = hash; } catch (e) { window.open(hash, '_blank'); }
});
"""


def write_front_html(path: Path, rows: Sequence[dict], xs: Sequence[str], y: str, experiment_id: str,
                     units: dict[str, tuple[float, str]], title: str) -> Path:
    """Write the interactive front of ``rows`` (as ranked by :func:`~.pareto.rank_front`) to ``path``."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(xs), horizontal_spacing=0.08)
    for col, x in enumerate(xs, start=1):
        sx, lx = units.get(x, (1.0, x))
        sy, ly = units.get(y, (1.0, y))
        for on_front, name, color in ((True, "Pareto front", "#d62728"), (False, "dominated", "#999999")):
            pts = [r for r in rows if r.get(x) is not None and r.get(y) is not None
                   and bool(r.get(IS_PARETO)) == on_front]
            if not pts:
                continue  # a legend entry only for what is drawn
            pts.sort(key=lambda r: r[x])
            fig.add_scatter(
                x=[r[x] / sx for r in pts], y=[r[y] / sy for r in pts], mode="markers+lines" if on_front else "markers",
                name=name, legendgroup=name, showlegend=col == 1, marker={"size": 11, "color": color},
                text=[_hover(r, xs, y, units) for r in pts], hoverinfo="text",
                customdata=[[experiment_id, r["run_id"]] for r in pts], row=1, col=col)
        fig.update_xaxes(title_text=lx, row=1, col=col)
        fig.update_yaxes(title_text=ly, row=1, col=col)
    fig.update_layout(title={"text": title + "<br><sub>hover: a trial's values; click: open its run</sub>"},
                      template="plotly_white", height=480, autosize=True, margin={"l": 60, "r": 20},
                      legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"})
    # as wide as the frame it is shown in (MLflow's artifact view is ~600 px at a 1400 px window): every panel
    # in sight, no sideways scrolling
    fig.write_html(str(path), include_plotlyjs=True, full_html=True, post_script=CLICK_OPENS_RUN,
                   default_width="100%", default_height=480, config={"responsive": True})
    return Path(path)


def _hover(r: dict, xs: Sequence[str], y: str, units: dict[str, tuple[float, str]]) -> str:
    figures = []
    for k in (y, *xs):
        scale, label = units.get(k, (1.0, k))
        figures.append(f"{label}: {r[k] / scale:.4g}" if r.get(k) is not None else f"{label}: -")
    rank = r.get(PARETO_RANK)
    return "<br>".join([f"<b>{r.get('name') or r.get('trial')}</b>", f"{r.get('status')}, rank "
                        f"{rank if rank is not None else '-'}", *figures])
