"""The MLflow run schema and what reads or writes runs by it (issue 16).

* :mod:`.schema`   — every tag and run-level metric name, the run kinds, a truncating ``set_tag``;
* :mod:`.tracking` — where runs are stored, experiments, params/metrics/artifacts, finding a sweep's runs;
* :mod:`.pareto`   — non-dominated ranks, hypervolume, and ranking a sweep's trials into its parent run.

Every room that reads or writes runs (sweep, hil, boards, report, commands) goes through here.
"""
