"""Diagnostics outside classification: robust low-rank matrix recovery (ℓ1 sub-gradient method with outliers)."""

from __future__ import annotations

from ._matrix import MatrixSensing, make_matrix_sensing, subgradient_recovery

__all__ = ["MatrixSensing", "make_matrix_sensing", "subgradient_recovery"]
