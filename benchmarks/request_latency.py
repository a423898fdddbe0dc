"""A request in words with a history, at catalog scale: the exact path (catalog-wide products, what every request
did before) vs the searched path (the pool from the approximate index, only pooled rows scored), in one run.

    python benchmarks/request_latency.py --size L --work <scratch> --requests 200 --out eval/results/scale/request-latency-L

The catalog, interactions and users are `recgen synth` data of ``--size`` (generated once into ``--work``); the
transitions are fitted on all sequences. Item vectors are generated, not embedded (``embed_index
.clustered_vectors``: 1M titles take ~25 min to embed here, and the cost of a request does not depend on what
the vectors mean); every request is run once on each path before timing, so its texts are embedded by the real model and cached (the encoder's cost is the
same on both paths). Both retrievers hold the same vectors, transitions and cold items' neighbours; one has a
flat index (exact path), the other HNSW with efSearch chosen for recall@100 >= 0.98 (searched path). Each
request is timed on both, alternating which goes first. Kinds: free text (title words: the pool is the text's
nearest ``request_pool`` items), a genre filter, a negated genre filter ("anything but <genre>": most of the
catalog allowed), a genre + decade filter for a new user (the request prior).
With ``--dataset`` (a dataset ``recgen fit`` has fitted, and ``--config`` it was fitted with) the catalog, its
real embedded vectors, the fit's approximate index, transitions and cold items' neighbours are the fitted
folder's (opened as a server opens it) and the exact path gets a flat index over the same vectors:

    python benchmarks/request_latency.py --dataset synth-L --config eval/results/scale/fit-L-config.json \
        --work <scratch> --out eval/results/scale/request-latency-L-fitted
Also timed: ``--feedback`` feedback events' statistics update (``ItemTransitions.updated``: one user's sequence
and one more item) at this size. Written: p50/p95 per kind and path, the top-20 overlap between the paths, setup times, peak RSS and the load
average. Only counts and timings, never the data.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from embed_index import clustered_vectors
from loadkit import percentile


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="L", help="recgen synth size (XS, S, M, L)")
    parser.add_argument("--requests", type=int, default=200, help="requests of each kind")
    parser.add_argument("--n", type=int, default=20, help="candidates asked for")
    parser.add_argument("--feedback", type=int, default=20, help="feedback events whose statistics update is timed")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (the generated data)")
    parser.add_argument("--dataset", default=None, help="a fitted dataset (name or folder): its folder's state")
    parser.add_argument("--config", default=None, help="with --dataset: the config file it was fitted with")
    parser.add_argument("--out", type=Path, required=True, help="results path without extension (.json)")
    args = parser.parse_args()
    from recgen.config import RetrievalSettings
    from recgen.data import load_dataset
    from recgen.data.synth import SynthSpec, generate
    from recgen.retrieval import Retriever
    from recgen.retrieval.collaborative import ItemTransitions

    args.out.parent.mkdir(parents=True, exist_ok=True)  # before the work: never lose it at the end
    setup, load = {}, [os.getloadavg()[0]]
    if args.dataset:  # the fitted folder's catalog, vectors, index, transitions and cold neighbours
        from recgen.config import RecgenConfig
        from recgen.recommender import open_dataset

        config = RecgenConfig.from_file(args.config) if args.config else None
        setup["open_s"], (data, rec) = _timed(lambda: open_dataset(args.dataset, config))
        searched, catalog, sequences = rec.retriever, data.catalog, list(data.sequences.values())
        transitions, vectors = searched.transitions, np.asarray(searched.item_embeddings)
        settings, embedder = searched.settings.model_copy(update={"index": "flat"}), searched.embedder_name
        described = f"{args.dataset}, fitted ({len(catalog):,} items, {len(sequences):,} users; real embeddings)"
    else:
        data_dir = args.work / f"synth-{args.size}"
        if not (data_dir / "items.jsonl").exists():
            setup["synth_s"], _ = _timed(lambda: generate(SynthSpec.sized(args.size), data_dir))
        setup["load_s"], data = _timed(lambda: load_dataset(str(data_dir)))
        catalog, sequences = data.catalog, list(data.sequences.values())
        setup["transitions_s"], transitions = _timed(lambda: ItemTransitions.fit(catalog, sequences))
        vectors, settings, embedder = clustered_vectors(len(catalog)), RetrievalSettings(index="flat"), None
        setup["hnsw_build_s"], searched = _timed(lambda: Retriever.from_vectors(
            catalog, vectors, RetrievalSettings(index="hnsw"), transitions=transitions))
        described = (f"recgen synth --size {args.size} (seed 0): {len(catalog):,} items, {len(sequences):,} users; "
                     "generated vectors")
    setup["flat_build_s"], exact = _timed(lambda: Retriever.from_vectors(
        catalog, vectors, settings, embedder_name=embedder, transitions=transitions))
    setup["cold_neighbours_s"], neighbours = _timed(lambda: searched.cold_neighbours(transitions))
    exact.adopt_cold_neighbours(transitions, neighbours)
    setup = {k: round(v / 1000, 1) for k, v in setup.items()}
    load.append(os.getloadavg()[0])
    print(f"setup {setup}; index {searched.index_meta.describe()}", file=sys.stderr)

    rng = random.Random(0)
    users = rng.sample(range(len(sequences)), args.requests)
    genres = sorted({g for item in catalog.items[:20000] for g in item.genres})
    requests = {
        "free text (title words)": [(sequences[u][:-1], " ".join(catalog.items[rng.randrange(len(catalog))].title.split()[:2]))
                                    for u in users],
        "genre filter": [(sequences[u][:-1], f"a {rng.choice(genres)} pick") for u in users],
        "negated genre filter": [(sequences[u][:-1], f"anything but {rng.choice(genres)}") for u in users],
        "genre + decade, new user": [([], f"a {rng.choice(genres)} pick from the {rng.choice(['1980s', '1990s', '2000s'])}")
                                     for _ in users],
    }
    for retriever in (exact, searched):  # the encoder's cost is the same on both paths: every text embedded (and
        for pairs in requests.values():  # cached) before timing, a new user's described filters too
            for history, text in pairs:
                retriever.candidates(history, text, n=args.n)
    results = {}
    for kind, pairs in requests.items():
        times, overlap = {"exact": [], "searched": []}, []
        for k, (history, text) in enumerate(pairs):
            order = (("exact", exact), ("searched", searched))[:: 1 if k % 2 == 0 else -1]
            got = {}
            for name, retriever in order:
                ms, found = _timed(lambda r=retriever: r.candidates(history, text, n=args.n))  # noqa: B023
                times[name].append(ms)
                got[name] = [i for i, _ in found.items]
            overlap.append(len(set(got["exact"]) & set(got["searched"])) / max(1, len(got["exact"])))
        results[kind] = {name: {"p50_ms": round(percentile(t, 50), 2), "p95_ms": round(percentile(t, 95), 2)}
                         for name, t in times.items()}
        results[kind]["p50_exact_over_searched"] = round(results[kind]["exact"]["p50_ms"]
                                                         / results[kind]["searched"]["p50_ms"], 1)
        results[kind]["top_overlap_mean"] = round(float(np.mean(overlap)), 4)
        print(kind, results[kind], file=sys.stderr)
    # a feedback event's statistics update at this size (one user's sequence + one item; ItemTransitions.updated)
    rows = [np.array([catalog.index_of(i) for i in sequences[u]], dtype=np.int64) for u in users[:args.feedback]]
    update_ms = [_timed(lambda r=r: transitions.updated(add=[np.append(r, rng.randrange(len(catalog)))],  # noqa: B023
                                                        remove=[r]))[0] for r in rows]
    load.append(os.getloadavg()[0])
    shown = [f"<{Path(a).name}>" if os.path.isabs(a) else a for a in sys.argv[1:]]  # no folder of this machine
    result = {"command": "python benchmarks/request_latency.py " + shlex.join(shown),
              "data": described,
              "index": searched.index_meta.describe(), "cold_items_borrowing": int(len(neighbours.cold)),
              "setup_s": setup, "requests_per_kind": args.requests, "n": args.n, "latency": results,
              "feedback_update_ms": {"events": len(update_ms), "p50": round(percentile(update_ms, 50), 1),
                                     "p95": round(percentile(update_ms, 95), 1),
                                     "transition_entries": int(transitions.matrix.nnz)},
              "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
              "load_1min": {"start": load[0], "after_setup": load[1], "end": load[2]},
              "machine": f"{os.cpu_count()} cores, one request at a time, FAISS and BLAS on their default threads"}
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
