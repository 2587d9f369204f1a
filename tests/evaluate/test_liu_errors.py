"""Liu et al. argument checks."""
import pytest
import torch

from ctxbudget.evaluate import liu_max_volume
from eval_helpers import make_images, tiny_conv


def test_alpha_crown_is_rejected_for_the_optimisation():
    x = make_images(2)
    with pytest.raises(ValueError, match="alpha-crown"):
        liu_max_volume(tiny_conv(), x, torch.zeros(2, dtype=torch.long), method="alpha-crown")
