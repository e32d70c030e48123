import numpy as np

from spikescale.digits import SENSOR_SIZE, make_digits
from spikescale.params import DigitsParams


def test_digits_are_nmnist_like_deterministic_and_stratified():
    a = make_digits(DigitsParams(), seed=3, max_samples_per_class=4)
    b = make_digits(DigitsParams(), seed=3, max_samples_per_class=4)
    for split in ("train", "test"):
        es = a[split]
        assert es.fingerprint() == b[split].fingerprint()
        assert es.sensor_size == SENSOR_SIZE
        assert np.bincount(es.labels, minlength=10).tolist() == [4] * 10
        ev = es.events
        assert ev["x"].min() >= 0 and ev["x"].max() < 34 and ev["y"].max() < 34
        assert set(np.unique(ev["p"])) == {0, 1}
        assert ev["t"].min() >= 0 and ev["t"].max() < 300_000
        per_sample = es.events_per_sample
        assert 1000 < np.median(per_sample) < 10000  # N-MNIST has about 4,000
        for i in range(len(es)):
            assert np.all(np.diff(es.sample(i)["t"]) >= 0)
    c = make_digits(DigitsParams(), seed=4, max_samples_per_class=4)
    assert c["train"].fingerprint() != a["train"].fingerprint()


def test_events_follow_the_saccades():
    es = make_digits(DigitsParams(), seed=0, max_samples_per_class=2)["test"]
    counts = np.histogram(es.events["t"], bins=3, range=(0, 300_000))[0]
    assert counts.min() > 0.2 * counts.max()  # every saccade makes events
