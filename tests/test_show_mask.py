import numpy as np
import pytest
import torch

from sam_explain.figures import show_mask
from sam_explain.figures.figure import Figure


def test_mask_is_coloured_only_where_on():
    ax = Figure().add_subplot()
    mask = torch.zeros(8, 10, dtype=torch.bool)
    mask[2:5, 3:7] = True
    rgba = show_mask(ax, mask).get_array()
    assert rgba.shape == (8, 10, 4)
    assert np.all(rgba[~mask.numpy(), 3] == 0)  # see-through outside
    assert np.allclose(rgba[mask.numpy(), 3], 0.55)
    with pytest.raises(ValueError, match="must be H x W, got shape"):
        show_mask(ax, np.zeros((1, 8, 10), bool))
