"""Figures of issue 19 (comparing runs in the MLflow UI), over a store that holds a finished sweep.

    .venv/bin/python benchmarks/bench_mlflow_ui.py [--tracking-uri sqlite:///mlflow.db] [--sweep SWEEP]

With the store `make quickstart` leaves (default: ./mlflow.db), in headless Chromium (Debian's
chromium + chromium-driver):

1. seconds from starting the UI the way `dance ui` does to the sweep's runs table rendered with its
   row, and to the parent run's page rendered with the front in its description;
2. the path from the experiment to the best trial's settings, clicked through as a person would:
   the link `dance ui` prints (the runs table) → the sweep's row (its page: the front) → the best
   trial's link in the front's table (its page: name = swept values, params swept.* first among
   what differs); each hop is a click on a link that the page shows, counted here;
3. the axes MLflow's compare view of the sweep's trials plots by default in its parallel-coordinates
   plot (its first three params that differ, sorted, and the first metric every trial has);
4. whether pareto.html draws its figure inside MLflow's artifact view (a frame), and how long it took.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "orchestrator" / "sweep"))

from ui_helpers import artifact_frame_draws, browser, compare_view_axes, page_text  # noqa: E402

from orchestrator.processes import free_port  # noqa: E402
from orchestrator.runs.tracking import resolve_tracking_uri, sweep_children  # noqa: E402
from orchestrator.runs.ui import find_sweep_link, start_ui, stop_ui  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--sweep", default=None, help="sweep id (default: the newest)")
    args = parser.parse_args()
    import mlflow

    uri = resolve_tracking_uri(args.tracking_uri)
    link = find_sweep_link(uri, args.sweep)
    if link is None:
        print(f"no sweep in {uri}: run `make quickstart` first")
        return 2
    client = mlflow.MlflowClient(uri)
    parent = client.get_run(link.parent_run_id)
    best = parent.data.tags.get("dance.best.miou", "")
    best_name = best.split(": ", 1)[1].rsplit(" (", 1)[0] if ": " in best else None
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        proc = start_ui(uri, port, Path(tmp) / "ui.log")
        t_up = time.perf_counter() - t0
        driver = browser()
        try:
            base = f"http://127.0.0.1:{port}"
            page_text(driver, link.runs(base), ["Training runs", parent.info.run_name], timeout=180)
            t_table = time.perf_counter() - t0
            clicks = 0
            driver.find_element("link text", parent.info.run_name).click()
            clicks += 1
            page_text(driver, driver.current_url, ["rank", "train TFLOPs"], timeout=120)
            t_parent = time.perf_counter() - t0
            if best_name:
                # the description's links open a new tab (target=_blank): follow the one a person clicks
                href = driver.find_element("partial link text", best_name).get_attribute("href")
                clicks += 1
                text = page_text(driver, href, [best_name], timeout=120)
                shown = "_swept." in text
            print(f"UI answering: {t_up:.1f} s; runs table with the sweep's row: {t_table:.1f} s; "
                  f"parent page with the front: {t_parent:.1f} s (from the start of the UI)")
            print(f"clicks from the runs table to the best trial's page: {clicks} (the link `dance ui` prints opens "
                  f"the table){'; its _swept.* params are on that page' if best_name and shown else ''}")
            kids = [r.info.run_id for r in sweep_children(client, link.experiment_id, link.sweep_id)]
            axes = compare_view_axes(driver, base, link.experiment_id, kids)
            print(f"compare view of the {len(kids)} trials, parallel coordinates by default: {', '.join(axes)}")
            t1 = time.perf_counter()
            drawn = artifact_frame_draws(driver, link.parent(base), "pareto.html", ".main-svg .scatterlayer .point")
            print(f"pareto.html in MLflow's artifact view: {'draws its points' if drawn else 'DRAWS NOTHING'} "
                  f"({time.perf_counter() - t1:.1f} s to open and draw)")
        finally:
            driver.quit()
            stop_ui(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
