"""Table 4 statistics and DSC on a hand-made edge history with known answers."""

import numpy as np
import pytest

from dagwire.dynamics import dice, edge_dynamics

TAU = 0.01


def test_known_history():
    # 4 epochs × 4 edges; edges 0, 1 retained, 2, 3 eliminated
    h = np.array([
        [0.50, 0.005, 0.20, 0.001],
        [0.40, 0.020, 0.005, 0.001],
        [0.30, 0.005, 0.150, 0.002],  # edge 2 recovers above 10τ after going below
        [0.30, 0.300, 0.001, 0.001],
    ])
    d = edge_dynamics(h, np.array([True, True, False, False]), TAU)
    assert d["A"] == 50.0  # edge 1 dipped, edge 0 never
    assert d["B"] == 1.0  # (0 + 2) / 2 epochs below τ
    assert d["C"] == 50.0  # edge 2 recovered to 0.15 > 10τ, edge 3 never
    assert d["D"] == 0.5  # epochs above τ after first dip: edge 2 → 1 (epoch 3), edge 3 → 0
    assert d["edges"] == 2
    # epoch 1 largest two: edges 0 and 2; smallest two: edges 1 and 3
    assert d["dsc_largest"] == pytest.approx(0.5) and d["dsc_smallest"] == pytest.approx(0.5)


def test_dice():
    assert dice({1, 2}, {1, 2}) == 1.0 and dice({1}, {2}) == 0.0 and dice(set(), set()) == 1.0
    assert dice({1, 2, 3}, {3, 4}) == pytest.approx(2 / 5)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError):
        edge_dynamics(np.zeros((3, 4)), np.ones(5, bool), TAU)
