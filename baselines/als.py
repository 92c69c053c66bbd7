"""Implicit ALS (Hu, Koren and Volinsky 2008) through the `implicit` package: item factors fitted
on a (users, items) confidence matrix; users folded in by one least-squares step per row."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def log_confidence(m: sp.csr_matrix) -> sp.csr_matrix:
    """log(1 + weight) of a (users, items) weight matrix; negative weights count as 0."""
    m = m.astype(np.float32, copy=True)
    m.data = np.log1p(np.maximum(m.data, 0.0))
    return m


class Als:
    """64 factors, regularisation 0.05, 15 iterations (implicit's defaults but the factors)."""

    def __init__(self, factors: int = 64, regularization: float = 0.05, iterations: int = 15):
        self.factors, self.regularization, self.iterations = factors, regularization, iterations

    def fit(self, confidence: sp.csr_matrix, seed: int) -> np.ndarray:
        """Fit on (users, items) confidences; returns the training users' factors."""
        # imported here: implicit pulls its compiled extension and threadpoolctl (~0.5 s)
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):  # implicit's advice: BLAS threads fight its own
            self.model = AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                iterations=self.iterations,
                num_threads=1,
                random_state=seed,
            )
            self.model.fit(confidence, show_progress=False)
        return np.asarray(self.model.user_factors, np.float32)  # (users, factors)

    def embed(self, confidence: sp.csr_matrix) -> np.ndarray:
        """(rows, factors) factors of any users from their confidences over the fitted items."""
        from threadpoolctl import threadpool_limits

        rows = np.arange(confidence.shape[0])
        with threadpool_limits(1, "blas"):
            return np.asarray(self.model.recalculate_user(rows, confidence), np.float32)
