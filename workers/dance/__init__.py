"""The DANCE algorithm, one file per part of the paper.

* ``complexity`` — Eq. 1, spatial complexity SC_mean (§3.2)
* ``cdf``        — Maxwell–Boltzmann CDF mapping SC to p (§3.2)
* ``slimming``   — CAD / CASD / CAL / RD rules from p (§3.2, Table 9)
* ``sampler``    — per-epoch drops and size-bucketed batches (§3.2)
* ``loss``       — the complexity-adaptive loss, Eq. 2 (§3.2)
* ``ans``        — automated network slimming, Algorithm 1 and Eq. 4's schedule (§3.3)
* ``cost_model`` — theoretical cost savings, Eqs. 3 and 4 (§3.4)
"""
