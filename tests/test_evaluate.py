import numpy as np
from torch import nn

from spikescale.collect import pareto_front, recommend
from spikescale.evaluate import checkpoints, fan_out, macs, predictions


def test_a_sample_without_output_spikes_has_no_prediction():
    counts = np.array([[0, 0, 0], [0, 2, 1], [3, 3, 0]])
    assert predictions(counts).tolist() == [-1, 1, 0]


def test_fan_out_counts_every_synapse_through_pooling():
    conv = nn.Conv2d(2, 3, 3, padding=1, bias=False)
    seg = nn.Sequential(nn.AvgPool2d(2), conv)
    fan = fan_out(seg, (2, 9, 9))
    # brute force: a spike at (c, y, x) enters pool cell (y//2, x//2) unless cropped,
    # then reaches every output of the conv whose kernel covers that cell
    expected = np.zeros((2, 9, 9))
    for c in range(2):
        for y in range(9):
            for x in range(9):
                py, px = y // 2, x // 2
                if py >= 4 or px >= 4:
                    continue
                targets = sum(
                    1
                    for oy in range(4)
                    for ox in range(4)
                    if abs(oy - py) <= 1 and abs(ox - px) <= 1
                )
                expected[c, y, x] = 3 * targets
    assert np.array_equal(fan, expected)


def test_macs_of_conv_and_linear():
    assert macs(nn.Sequential(nn.Conv2d(2, 8, 3, padding=1)), (2, 34, 34)) == 34 * 34 * 8 * 2 * 9
    assert macs(nn.Sequential(nn.Flatten(), nn.Linear(12, 5)), (3, 2, 2)) == 60


def test_checkpoints_end_at_the_last_step():
    cp = checkpoints(300, 15)
    assert cp[-1] == 299 and len(cp) == 15 and np.all(np.diff(cp) > 0)


def test_recommendation_is_the_smallest_factor_within_tolerance():
    factors = np.array([1.0, 2, 4, 8, 16])
    acc = np.array([0.0, 0.5, 0.89, 0.9, 0.88])
    rec = recommend(factors, acc, tolerance_pp=1.0)
    assert rec["best_factor"] == 8 and rec["recommended_factor"] == 4
    assert recommend(factors, acc, tolerance_pp=0.0)["recommended_factor"] == 8


def test_pareto_front():
    acc = np.array([0.1, 0.5, 0.5, 0.9, 0.8])
    cost = np.array([1.0, 2, 3, 4, 5])
    assert pareto_front(acc, cost).tolist() == [True, True, False, True, False]


def test_refine_bisects_geometrically_towards_the_smallest_good_factor():
    from spikescale.refine import refine_factors

    truth = lambda f: 0.9 if f >= 3.0 else 0.2  # noqa: E731  accuracy jumps at factor 3
    results = {1.0: 0.2, 2.0: 0.2, 4.0: 0.9, 8.0: 0.9}
    tried = refine_factors(results, 3, 1.0, truth)
    assert tried == [2.828, 3.363, 3.084]
    assert min(f for f, a in results.items() if a >= 0.9) == 3.084
    assert refine_factors({1.0: 0.9, 2.0: 0.9}, 3, 1.0, truth) == []  # nothing below the smallest
