"""Ray Tune sweeps of DANCE, every trial a child run in MLflow (DESIGN §5, issue 8).

One room, one job per module:

* :mod:`.schema`    — the ``sweep:`` section (domains, search, objectives, scheduler);
* :mod:`.space`     — loading a sweep YAML, checking every point of the space, the Tune space;
* :mod:`.preflight` — every check before scoring and Ray: tracking store, storage, empty space, resume;
* :mod:`.interrupt` — Ctrl-C/SIGTERM as a state: the signal recorded, Tune left to save its state;
* :mod:`.resources` — how many trials fit the cluster at once, and which never fit;
* :mod:`.storage`   — checkpoint storage: a shared folder or an S3-compatible URI;
* :mod:`.trial`     — what runs per trial: one ``TorchTrainer`` reporting to Tune;
* :mod:`.tracking`  — the Tune callback that keeps MLflow's parent/child runs;
* :mod:`.pareto`    — non-dominated ranks, hypervolume, the front's CSV and plot;
* :mod:`.live`      — the live trial table (plain lines off a terminal);
* :mod:`.runner`    — :func:`run_sweep`: validate, score once, tune, rank, register.
"""
