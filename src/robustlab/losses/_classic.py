"""Classic losses: cross-entropy, label smoothing, focal, MSE and MAE on probabilities."""

from __future__ import annotations

from . import _fn_prob as P
from ._base import Loss, register_loss

__all__ = ["CrossEntropyLoss", "FocalLoss", "LabelSmoothingLoss", "MAELoss", "MSELoss"]


@register_loss("ce", tags={"classic"}, reference="cross-entropy", example_kwargs={})
class CrossEntropyLoss(Loss):
    """Cross-entropy, :math:`\\log\\sum_k e^{f_k} - f_y`. Unbounded; no hyper-parameters."""

    functional = staticmethod(P.ce)


@register_loss("label_smoothing", tags={"classic"}, reference="Szegedy et al., CVPR 2016 (arXiv:1512.00567)",
               example_kwargs={"smoothing": 0.1})
class LabelSmoothingLoss(Loss):
    """Label smoothing :math:`(1-s)(-\\log p_y) + \\frac sK\\sum_k(-\\log p_k)`.

    Args: ``smoothing`` s in [0, 1), default 0.1. Szegedy et al., CVPR 2016.
    """

    functional = staticmethod(P.label_smoothing)

    def __init__(self, smoothing: float = 0.1, *, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._init_hparams(smoothing=smoothing)


@register_loss("focal", tags={"classic"}, reference="Lin et al., ICCV 2017 (arXiv:1708.02002)",
               example_kwargs={"gamma": 2.0})
class FocalLoss(Loss):
    """Focal loss :math:`-(1-p_y)^\\gamma\\log p_y`.

    Args: ``gamma`` >= 0, default 2 (0 is CE). Lin et al., ICCV 2017.
    """

    functional = staticmethod(P.focal)

    def __init__(self, gamma: float = 2.0, *, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self._init_hparams(gamma=gamma)


@register_loss("mse", tags={"classic", "bounded"}, reference="Ghosh, Kumar & Sastry, AAAI 2017 (arXiv:1712.09482)",
               example_kwargs={})
class MSELoss(Loss):
    """Squared error on probabilities :math:`\\sum_k(e_{y,k}-p_k)^2`, bounded in [0, 2]. Ghosh et al., AAAI 2017."""

    functional = staticmethod(P.mse)


@register_loss("mae", tags={"classic", "bounded", "symmetric"},
               reference="Ghosh, Kumar & Sastry, AAAI 2017 (arXiv:1712.09482)", example_kwargs={})
class MAELoss(Loss):
    """Absolute error on probabilities :math:`\\sum_k|e_{y,k}-p_k| = 2(1-p_y)`; bounded, symmetric. Ghosh et al., AAAI 2017."""

    functional = staticmethod(P.mae)
