import os

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def official():
    from sam_explain.testing import official_modeling

    return official_modeling()


@pytest.fixture(scope="session")
def sam_pair():
    """(official decoder, official prompt encoder, our decoder, our prompt encoder), same weights."""
    from sam_explain import build_mask_decoder, build_prompt_encoder
    from sam_explain.testing import build_official_pair

    od, op = build_official_pair(seed=0)
    d, p = build_mask_decoder(), build_prompt_encoder()
    d.load_state_dict(od.state_dict(), strict=True)
    p.load_state_dict(op.state_dict(), strict=True)
    return od, op, d, p


@pytest.fixture
def one_thread():
    """Small ops: one thread is much faster than two on a busy 2-core machine. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
