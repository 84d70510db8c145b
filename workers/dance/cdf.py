"""Paper §3.2: map spatial complexity to p ∈ [0, 1] through a fitted Maxwell–Boltzmann CDF.

The fitted (loc, scale) belong to the trained model: checkpoints and exports carry
:meth:`MaxwellCDF.to_dict`, because inference resizes each test image by its p.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MaxwellCDF:
    loc: float
    scale: float

    @classmethod
    def fit(cls, sc_values: np.ndarray) -> "MaxwellCDF":
        """Maximum-likelihood fit of ``scipy.stats.maxwell`` (loc and scale) to SC values."""
        values = np.asarray(sc_values, dtype=np.float64)
        values = values[np.isfinite(values)]
        if values.size < 2:
            raise ValueError(f"need at least 2 finite complexity scores to fit the CDF, got {values.size}")
        if np.ptp(values) == 0:
            raise ValueError("all images have the same spatial complexity; the CDF cannot be fitted")
        from scipy import stats  # here, not at the top: a training worker only carries the fitted values

        loc, scale = stats.maxwell.fit(values)
        return cls(loc=float(loc), scale=float(scale))

    def p(self, sc: np.ndarray | float) -> np.ndarray:
        """p = CDF(SC), clipped to [0, 1]."""
        from scipy import stats

        out = stats.maxwell.cdf(np.asarray(sc, dtype=np.float64), loc=self.loc, scale=self.scale)
        return np.clip(out, 0.0, 1.0)

    def to_dict(self) -> dict:
        return {"distribution": "maxwell", "loc": self.loc, "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict) -> "MaxwellCDF":
        if d.get("distribution", "maxwell") != "maxwell":
            raise ValueError(f"unsupported complexity distribution {d.get('distribution')!r}")
        return cls(loc=float(d["loc"]), scale=float(d["scale"]))
