"""Opening a fitted folder reuses what the caller already holds: the dataset's catalog stands in for the folder's
``catalog.jsonl`` only when that file holds exactly it (a folder whose catalog grew or changed is read as saved),
and the live counts of the feedback loop are the per-item interaction counts."""

from __future__ import annotations

import numpy as np
from builders import make_dataset

from recgen import RecgenConfig, Recommender
from recgen.data.catalog import Catalog, Item
from recgen.feedback import Feedback


def test_the_datasets_catalog_is_used_only_when_the_folder_holds_exactly_it(tmp_path, tiny_backend):
    dataset = make_dataset(n_items=40, n_users=6)
    Recommender.from_dataset(dataset, RecgenConfig(), backend=tiny_backend).save(tmp_path / "rec")
    same = Recommender.load(tmp_path / "rec", catalog=dataset.catalog, backend=tiny_backend)
    assert same.catalog is dataset.catalog
    items = list(dataset.catalog.items)
    items[3] = Item(items[3].item_id, items[3].title + " (director's cut)", items[3].genres, items[3].year)
    edited = Catalog(items)
    other = Recommender.load(tmp_path / "rec", catalog=edited, backend=tiny_backend)
    assert other.catalog is not edited and other.catalog.get(items[3].item_id).title == dataset.catalog.items[3].title
    assert other.catalog.fingerprint() == dataset.catalog.fingerprint() != edited.fingerprint()


def test_the_feedback_counts_are_interactions_per_item(tmp_path, tiny_backend):
    dataset = make_dataset(n_items=40, n_users=6)
    recommender = Recommender.from_dataset(dataset, RecgenConfig(), backend=tiny_backend)
    loop = Feedback(recommender.pipeline, dataset, tmp_path / "events.sqlite")
    expected = np.zeros(len(dataset.catalog), dtype=np.int64)
    for sequence in dataset.sequences.values():
        for item in sequence:
            expected[dataset.catalog.index_of(item)] += 1
    assert loop.counts.dtype == np.int64 and np.array_equal(loop.counts, expected)
