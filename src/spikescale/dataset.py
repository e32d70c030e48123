"""The `events` stage: a dataset's train and test splits as event stores."""

from __future__ import annotations

from pathlib import Path

from spikescale.events import EventSet, write_events
from spikescale.params import DatasetParams


def load_splits(p: DatasetParams) -> dict[str, EventSet]:
    """Both splits of the configured dataset, built in or read through tonic."""
    if p.name == "digits":
        from spikescale.digits import make_digits

        return make_digits(p.digits, p.seed, p.max_samples_per_class)
    from spikescale.tonic_datasets import load_tonic

    return {
        split: load_tonic(
            p.name,
            Path(p.root),
            split,
            download=p.download,
            on_bad_sample=p.on_bad_sample,
            max_samples_per_class=p.max_samples_per_class,
        )
        for split in ("train", "test")
    }


def check_split(eventset: EventSet, name: str, split: str) -> None:
    if len(eventset) == 0:
        raise ValueError(f"dataset {name!r}: the {split} split has no samples")
    if len(eventset.events) == 0:
        raise ValueError(f"dataset {name!r}: every recording of the {split} split is empty")


def run_events(p: DatasetParams, out_dir: str | Path) -> dict[str, dict]:
    """Write ``<out_dir>/{train,test}.parquet``; return each split's summary."""
    splits = load_splits(p)
    for split, es in splits.items():
        check_split(es, p.name, split)
    summaries = {}
    for split, es in splits.items():
        write_events(es, Path(out_dir) / f"{split}.parquet", dataset=p.name, split=split)
        summaries[split] = es.summary()
    return summaries
