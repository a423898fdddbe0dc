"""Catalog embedding speed and retrieval index at scale (issue 24).

    python benchmarks/embed_index.py embed --dataset amazon-beauty --titles 3000 --rounds 3 --out eval/results/scale/embed_speed

``embed``: titles/s of the embedding model on torch, onnx and onnx-int8 (``RetrievalSettings.embed_backend``),
interleaved round by round in one run (so load hits all alike), each after a warm-up and the one-time export; and
the cosine of each item's onnx / onnx-int8 embedding to its torch embedding (mean, min). Only counts and timings
are written, never the data.

``index``: build time, one-query latency p50/p95 and memory of the exact (Flat) and the
approximate (HNSW32, efSearch chosen for recall@100 >= 0.98) index at 100k and 1M item vectors.

    python benchmarks/embed_index.py index --sizes 100000 1000000 --out eval/results/scale/embed_index

    python benchmarks/embed_index.py index --sizes 1000000 --vectors-from <cache>/indexes/L-all-MiniLM-L6-v2-<fp> \
        --ef-construction 40 200 --out eval/results/scale/hnsw-ef-construction

``--vectors-from`` takes the item vectors of a saved recgen index (real embedded titles, e.g. synth L's) instead
of generated ones, the first ``size`` rows; ``--ef-construction`` builds HNSW with each value (FAISS's default is
40, recgen's :data:`~recgen.retrieval.index.HNSW_EF_CONSTRUCTION`), same vectors and queries, one child each.

Otherwise vectors are generated, not embedded: unit vectors in 2,000 topic clusters on a 24-dimension subspace plus
isotropic noise, 384 dimensions, float32 (the shape of MiniLM title embeddings: many topics, few effective
dimensions). Each (size, kind) runs in its own child process, so its peak RSS is its own; a finished case is kept
in ``<out>.json`` and skipped when the command is run again (resumable). Latency is one query at a time (what a
served request does), over queries shaped like the retriever's (recency-weighted history means and noisy
single items; :func:`recgen.retrieval.index.query_sets`), on FAISS's default threads. Build time of the HNSW
index includes choosing efSearch (exact search for the tuning and held-out queries). The load average is
recorded before and after each case: the machine is shared and every figure depends on it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def clustered_vectors(n: int, dim: int = 384, latent: int = 24, clusters: int = 2000, seed: int = 0,
                      chunk: int = 100_000) -> np.ndarray:
    """``n`` unit float32 vectors in topic clusters on a low-dimensional subspace plus noise (built in chunks)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, latent)).astype(np.float32)
    basis = (rng.normal(size=(latent, dim)) / np.sqrt(latent)).astype(np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        z = centres[rng.integers(0, clusters, size=size)] + 0.5 * rng.normal(size=(size, latent)).astype(np.float32)
        x = z @ basis + 0.1 * rng.normal(size=(size, dim)).astype(np.float32)
        out[start:start + size] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def rss_mb() -> float:
    """Current resident set size (Linux /proc), MB."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def saved_index_vectors(folder: str, size: int) -> np.ndarray:
    """The first ``size`` item vectors of a saved recgen index, checked as recgen checks it before reading."""
    from recgen.retrieval.index import META_FILE, saved_vectors

    meta = json.loads((Path(folder) / META_FILE).read_text())
    vectors = saved_vectors(folder, meta["catalog_fingerprint"], meta["embedder"], meta["embed_backend"])
    if vectors is None:
        raise SystemExit(f"{folder} holds no readable recgen index")
    return np.ascontiguousarray(vectors[:size])


def one_case(size: int, kind: str, queries: int, vectors_from: str | None = None,
             ef_construction: int | None = None) -> dict:
    """Build one index over ``size`` generated (or saved) vectors and time single queries against it."""
    from recgen.retrieval import index as index_module
    from recgen.retrieval.index import IndexChoice, build_index, make_index, query_sets

    if ef_construction is not None:
        index_module.HNSW_EF_CONSTRUCTION = ef_construction
    load_before = os.getloadavg()
    vectors = saved_index_vectors(vectors_from, size) if vectors_from else clustered_vectors(size)
    size = len(vectors)
    base_mb = rss_mb()
    start, cpu = time.perf_counter(), time.process_time()
    if kind == "flat":
        index, meta = make_index(vectors), None
    else:
        index, meta = build_index(vectors, IndexChoice(kind=kind, queries=500))
    build_s, build_cpu = time.perf_counter() - start, time.process_time() - cpu
    index_mb = rss_mb() - base_mb
    probe = query_sets(vectors, queries, seed=11)[1]
    times = []
    for q in probe:
        t = time.perf_counter()
        index.search(q[None, :], 100)
        times.append((time.perf_counter() - t) * 1e3)
    out = {
        "items": size, "kind": kind, "build_s": round(build_s, 2), "build_cpu_s": round(build_cpu, 2),
        "query_ms_p50": round(float(np.percentile(times, 50)), 3), "query_ms_p95": round(float(np.percentile(times, 95)), 3),
        "queries": len(times), "index_rss_mb": round(index_mb, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, 1),
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
    }
    if vectors_from:
        out["vectors"] = "saved index (embedded titles)"
    if meta is not None:
        out["ef_construction"] = meta.build_params.get("efConstruction")
        out["choice"] = meta.reason
        out.update(factory=meta.factory, kind=meta.kind, search_params=meta.search_params,
                   tune_recall_at_100=meta.tune_recall, held_out_recall_at_100=meta.held_out_recall,
                   held_out_queries=meta.held_out_queries)
        exact = make_index(vectors)
        truth = exact.search(probe, 100)[1]
        found = index.search(probe, 100)[1]
        from recgen.retrieval.index import recall
        out["probe_recall_at_100"] = round(recall(found, truth), 5)
    return out


def embed_speed(dataset: str, titles: int, rounds: int, batch: int) -> dict:
    """Interleaved titles/s per backend and cosine agreement with torch."""
    from recgen.data import load_dataset
    from recgen.retrieval.embedder import embed, load_embedder

    catalog = load_dataset(dataset).catalog
    rows = np.random.default_rng(0).choice(len(catalog), size=min(titles, len(catalog)), replace=False)
    texts = [catalog.items[r].text() for r in rows]
    backends = ("torch", "onnx", "onnx-int8")
    load_s = {}
    for backend in backends:  # load + export (cached after the first run) + warm-up, outside the timing
        start = time.perf_counter()
        embed(load_embedder(None, backend), texts[:64], batch_size=batch)
        load_s[backend] = round(time.perf_counter() - start, 1)
    speed: dict[str, list[float]] = {b: [] for b in backends}
    vectors = {}
    loads = [os.getloadavg()[0]]
    for _ in range(rounds):
        for backend in backends:
            start = time.perf_counter()
            vectors[backend] = embed(load_embedder(None, backend), texts, batch_size=batch)
            speed[backend].append(len(texts) / (time.perf_counter() - start))
            loads.append(os.getloadavg()[0])
    out = {"dataset": dataset, "titles": len(texts), "rounds": rounds, "batch": batch, "cores": len(os.sched_getaffinity(0)),
           "load_1min": [round(x, 2) for x in loads], "first_load_and_export_s": load_s,
           "titles_per_s": {b: [round(v, 1) for v in speed[b]] for b in backends},
           "titles_per_s_median": {b: round(float(np.median(speed[b])), 1) for b in backends}}
    out["speedup_vs_torch"] = {b: round(out["titles_per_s_median"][b] / out["titles_per_s_median"]["torch"], 2)
                               for b in backends}
    for backend in backends[1:]:
        cosine = (vectors[backend] * vectors["torch"]).sum(axis=1)
        out[f"cosine_to_torch_{backend}"] = {"mean": round(float(cosine.mean()), 5), "min": round(float(cosine.min()), 5)}
    return out


def write_table(results: list[dict], path: Path, command: str) -> None:
    lines = [f"# Retrieval index at scale\n\n`{command}`\n",
             "| items | index | params | build s (cpu s) | query p50 / p95 ms | recall@100 held-out / probe | "
             "index RSS MB | peak RSS MB | load 1-min before→after |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        recall_text = (f"{r['held_out_recall_at_100']:.4f} / {r['probe_recall_at_100']:.4f}"
                       if "probe_recall_at_100" in r else "exact")
        params = {**({"efConstruction": r["ef_construction"]} if r.get("ef_construction") else {}),
                  **r.get("search_params", {})}
        lines.append(f"| {r['items']:,} | {r.get('factory', 'Flat')} | {params} | "
                     f"{r['build_s']} ({r['build_cpu_s']}) | {r['query_ms_p50']} / {r['query_ms_p95']} | "
                     f"{recall_text} | {r['index_rss_mb']} | {r['peak_rss_mb']} | "
                     f"{r['load_before'][0]}→{r['load_after'][0]} |")
    path.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    idx = sub.add_parser("index", help="index build/latency/memory at several sizes")
    idx.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    idx.add_argument("--kinds", nargs="+", default=["flat", "hnsw"])
    idx.add_argument("--queries", type=int, default=300)
    idx.add_argument("--out", default="eval/results/scale/embed_index")
    idx.add_argument("--vectors-from", help="a saved recgen index folder whose item vectors to use")
    idx.add_argument("--ef-construction", type=int, nargs="+", default=[None],
                     help="HNSW efConstruction values to build with (default: recgen's)")
    emb = sub.add_parser("embed", help="embedding speed per backend, interleaved, and agreement with torch")
    emb.add_argument("--dataset", default="amazon-beauty")
    emb.add_argument("--titles", type=int, default=3000)
    emb.add_argument("--rounds", type=int, default=3)
    emb.add_argument("--batch", type=int, default=64)
    emb.add_argument("--out", default="eval/results/scale/embed_speed")
    one = sub.add_parser("one", help=argparse.SUPPRESS)
    one.add_argument("size", type=int)
    one.add_argument("kind")
    one.add_argument("queries", type=int)
    one.add_argument("--vectors-from")
    one.add_argument("--ef-construction", type=int)
    args = parser.parse_args()
    if args.what == "one":
        print(json.dumps(one_case(args.size, args.kind, args.queries, args.vectors_from, args.ef_construction)))
        return
    if args.what == "embed":
        result = {"command": "python benchmarks/embed_index.py " + shlex.join(sys.argv[1:]),
                  **embed_speed(args.dataset, args.titles, args.rounds, args.batch)}
        Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=1))
        print(json.dumps(result, indent=1))
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = json.loads(out.with_suffix(".json").read_text())["results"] if out.with_suffix(".json").is_file() else []
    command = "python benchmarks/embed_index.py " + shlex.join(sys.argv[1:])
    if args.vectors_from:  # the cache's own path is this machine's: written as <cache>
        from recgen.paths import cache_dir

        command = command.replace(str(cache_dir()), "<cache>")
    cases = [(size, kind, efc) for size in args.sizes for kind in args.kinds
             for efc in (args.ef_construction if kind == "hnsw" else [None])]
    for size, kind, efc in cases:
        if any(r["items"] == size and r.get("requested", r["kind"]) == kind and r.get("requested_ef_construction") == efc
               for r in done):
            continue
        print(f"{size} {kind} efConstruction {efc} ...", flush=True)
        extra = ["--vectors-from", args.vectors_from] if args.vectors_from else []
        extra += ["--ef-construction", str(efc)] if efc is not None else []
        child = subprocess.run([sys.executable, __file__, "one", str(size), kind, str(args.queries), *extra],
                               check=True, capture_output=True, text=True)
        result = {**json.loads(child.stdout.strip().splitlines()[-1]), "requested": kind,
                  "requested_ef_construction": efc}
        print(result, flush=True)
        done.append(result)
        out.with_suffix(".json").write_text(json.dumps({"command": command, "results": done}, indent=1))
        write_table(done, out.with_suffix(".md"), command)


if __name__ == "__main__":
    main()
