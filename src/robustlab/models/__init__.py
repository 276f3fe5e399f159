"""Models: ``create(name, *, input_shape, num_classes, **kw)`` and ``available()``.

``linear``, ``mlp``, ``lenet``, ``preact_resnet18``, ``wide_resnet``; :class:`Normalize` puts input
normalization inside the model so attacks work in [0, 1].
"""

from __future__ import annotations

from . import (
    _cnn,  # noqa: F401  (registers)
    _denoiser,  # noqa: F401  (registers dncnn, conv_autoencoder)
    _lipschitz,  # noqa: F401  (registers lipschitz_mlp, lipschitz_cnn)
    _mlp,  # noqa: F401  (registers)
    _moe,  # noqa: F401  (registers moe_lenet)
)
from ._base import MODELS, Normalize, create, register_model
from ._moe import MoEConv2d, load_balancing_loss, routing
from ._ref import REFERENCE_FORMS, resolve
from ._resnet import Residual

__all__ = ["MODELS", "Normalize", "Residual", "available", "create", "register_model", "resolve"]
__all__ += ["REFERENCE_FORMS"]  # the model reference forms resolve accepts, in words
__all__ += ["MoEConv2d", "load_balancing_loss", "routing"]


def available() -> list[str]:
    """Registered model names."""
    return MODELS.available()
