"""Adding 1,000 items to the live 12k-item Amazon Beauty recommender: seconds, not a rebuild (issue 15).

    python benchmarks/add_items.py --dataset amazon-beauty --items 1000 --out eval/results/cold/add_items

Opens the dataset's recommender as every entry point does (cached index), then adds ``--items`` new items
through :meth:`recgen.recommender.Recommender.add_items` and times it. The new items are made from a seeded
sample of the catalog's own titles, relisted under new ids with an edition suffix (so nothing from the data is
written out: the result file holds counts and timings only). Right after the call, every new item is looked
up by its own title through the served first stage (``retriever.candidates``, what ``recommend`` ranks): the
share found in the top 10 says they are recommendable at once. A rebuild's cost is measured in the same run
as the time to embed the whole grown catalog (``--rebuild``), or, without it, estimated from the per-item
embedding time of the add. The load average is recorded: other processes on a shared machine slow every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from recgen.data import Item
from recgen.recommender import open_dataset
from recgen.retrieval.embedder import embed, load_embedder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="amazon-beauty")
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--check", type=int, default=200, help="new items looked up by title after the add")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rebuild", action="store_true", help="also time embedding the whole grown catalog")
    parser.add_argument("--out", default="eval/results/cold/add_items")
    args = parser.parse_args()

    load_before = os.getloadavg()
    _, rec = open_dataset(args.dataset)
    before = len(rec.catalog)
    rng = np.random.default_rng(args.seed)
    sources = rng.choice(before, size=args.items, replace=False)
    new = [Item(f"new-{n}", f"{rec.catalog.items[row].title} - 2027 edition") for n, row in enumerate(sources)]
    load_embedder(rec.retriever.embedder_name)  # loaded once by any server already; not part of the add

    start = time.perf_counter()
    size = rec.add_items(new)
    add_s = time.perf_counter() - start

    checked = new[: args.check]
    start = time.perf_counter()
    found = sum(item.item_id in {i for i, _ in rec.retriever.candidates([], item.title, n=10).items}
                for item in checked)
    lookup_s = time.perf_counter() - start

    rebuild_s = None
    if args.rebuild:
        start = time.perf_counter()
        embed(load_embedder(rec.retriever.embedder_name), [item.text() for item in rec.catalog], batch_size=64)
        rebuild_s = time.perf_counter() - start
    result = {
        "command": shlex.join(["python", "benchmarks/add_items.py", *sys.argv[1:]]),
        "dataset": args.dataset, "catalog_before": before, "catalog_after": size, "items_added": args.items,
        "add_seconds": round(add_s, 2),
        "rebuild_seconds_measured": None if rebuild_s is None else round(rebuild_s, 1),
        "rebuild_seconds_estimated": round(add_s / args.items * size, 1),
        "new_items_found_top10_by_title": f"{found}/{len(checked)}",
        "lookup_ms_per_request": round(1000 * lookup_s / max(1, len(checked)), 1),
        "index_vectors": rec.retriever.index.ntotal, "load_average_before": [round(x, 1) for x in load_before],
        "load_average_after": [round(x, 1) for x in os.getloadavg()],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
