"""The certificate soundness battery on models that are not plain stacks (fx graphs: residual, cat, MaxPool)."""

import pytest

from robustlab.testing._models_ibp import GRAPH_MODELS, check_bounds_sound, graph_model


@pytest.mark.parametrize("name", sorted(GRAPH_MODELS))
def test_graph_model_certificates_are_sound(name):
    check_bounds_sound(graph_model(name), GRAPH_MODELS[name][1], name)
