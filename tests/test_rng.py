"""The global random states: read, set, put back (``pcm3.rng``)."""

import numpy as np
import pytest
import torch


def test_preserved_rng_puts_back_every_global_state_however_the_block_ends():
    import random

    from pcm3.rng import preserved_rng
    from tests.global_draws import draws, seed_all

    def seed():
        seed_all(11)

    seed()
    expected = draws()
    seed()
    with preserved_rng():
        random.seed(0)
        np.random.seed(0)
        torch.manual_seed(0)
        draws()
    assert draws() == expected
    seed()
    with pytest.raises(KeyError):
        with preserved_rng():
            torch.manual_seed(0)
            np.random.seed(0)
            raise KeyError("stop")
    assert draws() == expected
