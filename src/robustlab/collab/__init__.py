"""Robust collaborative learning: robust aggregators, Byzantine behaviours, data splits and ``fit``.

n workers train one model together while f of them are Byzantine. :mod:`.aggregators` holds the robust
rules (``mean``, ``coordinate_median``, ``trimmed_mean``, ``krum``, ``multi_krum``, ``geometric_median``,
``centered_clipping``, ``nnm``, ``monna``), :mod:`.byzantine` the attacks (``sign_flip``, ``label_flip``,
``gaussian``, ``alie``, ``ipm``, ``mimic``), :func:`split` the i.i.d. or Dirichlet(α) data split and
:func:`fit` the training loop (one process, batched; or one rank per worker on ``torch.distributed``).
"""

from __future__ import annotations

from . import aggregators, byzantine
from ._config import CollabConfig
from ._fit import CollabSetup, fit
from ._split import parse_heterogeneity, split
from .aggregators import AGGREGATORS
from .byzantine import BYZANTINE

__all__ = ["AGGREGATORS", "BYZANTINE", "CollabConfig", "CollabSetup", "aggregators", "byzantine", "fit", "parse_heterogeneity",
           "split"]
