"""Hardware-in-the-loop sweeps: trials measured on boards while the sweep goes on (issue 11).

* :mod:`.schema`    — the ``sweep.hil:`` section;
* :mod:`.features`  — what the cost model sees of a model: counted FLOPs, parameter bytes, input size;
* :mod:`.costmodel` — the per-board regression fitted on the measurement cache;
* :mod:`.select`    — which finished trials go to the boards;
* :mod:`.measurer`  — the driver-side queue: export, measure through the board pool, log to the trial's run.
"""
