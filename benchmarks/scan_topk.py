"""Feature building with per-source top-k (issue 24): main's code vs this checkout, interleaved in one run.

    python benchmarks/scan_topk.py --data SYNTH_S --data SYNTH_M --old-src OLD_CHECKOUT --users 1024 --repeat 2 \
        --out eval/results/scale/scan_topk

For each ``recgen synth`` folder: the catalog is embedded once (``--embed-backend``, default onnx-int8: the
fastest real embedder here; the torch embedding of M takes over an hour on this loaded machine) and indexed as
the settings choose for its size (flat below ``retrieval.ann_min_items``, HNSW from there, efSearch chosen on
recall@100), or the index ``recgen fit`` cached for it with that backend is reused. Then, alternating old and new ``--repeat`` times, a
child process (``PYTHONPATH`` = that side's code) loads the data and the index and builds the fused ranker's
depth-100 feature groups for ``--users`` validation users in batches of 256 (the fit's batch): wall and CPU
seconds of the building only, peak RSS of the child before and after it. The first child of each side also
writes its first 128 users' pools, so the sides' candidates and features are compared (identical where the
index is exact; at the index's recall where it is approximate). The load average is recorded with every run.
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

BATCH = 256
DEPTH = 100
COMPARED = 128


def _rss_mb() -> float:
    """Peak RSS of this process's memory since it started (VmHWM): getrusage's ru_maxrss would carry the
    parent's peak over the fork + exec."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args) -> None:
    """Build features for ``--users`` validation users with the code on PYTHONPATH; print one JSON line."""
    from recgen.config import RetrievalSettings
    from recgen.data import load_dataset
    from recgen.evaluation.protocol import EvalData
    from recgen.ranking.fusion import FeatureBuilder, Sources
    from recgen.retrieval import Retriever
    from recgen.retrieval.collaborative import ItemTransitions

    t0 = time.perf_counter()
    data = EvalData.from_dataset(load_dataset(args.data))
    catalog, ids = data.dataset.catalog, data.dataset.catalog.ids
    settings = RetrievalSettings(embed_backend=args.embed_backend)
    transitions = ItemTransitions.fit(catalog, [[ids[i] for i in s] for s in data.train_sequences()])
    retriever = Retriever.load(args.index, catalog, settings, transitions=transitions)
    sources = Sources(catalog, retriever, data.train_sequences())
    users = np.random.default_rng(0).choice(data.n_users, size=min(args.users, data.n_users), replace=False)
    histories = [data.history("valid", int(u)) for u in users]
    histories = [h for h in histories if len(h)]
    setup_s, setup_rss = time.perf_counter() - t0, _rss_mb()
    builder = FeatureBuilder(sources, DEPTH)
    groups, rows = [], 0
    load0 = os.getloadavg()[0]
    w0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, len(histories), BATCH):
        built = builder.build(histories[start:start + BATCH])
        rows += sum(len(g.rows) for g in built)
        if start < COMPARED:
            groups.extend(built)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    if args.dump:
        groups = groups[:COMPARED]
        np.savez(args.dump, names=np.array(builder.names), **{f"rows{i}": g.rows for i, g in enumerate(groups)},
                 **{f"X{i}": g.X for i, g in enumerate(groups)})
    print(json.dumps({"users": len(histories), "rows": rows, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
                      "wall_ms_per_user": round(1000 * wall / len(histories), 2),
                      "cpu_ms_per_user": round(1000 * cpu / len(histories), 2),
                      "setup_s": round(setup_s, 1), "peak_rss_mb_before_features": round(setup_rss),
                      "peak_rss_mb_after_features": round(_rss_mb()),
                      "index": retriever.index_meta.describe(), "load_before": load0,
                      "load_after": os.getloadavg()[0]}))


def prepare(data: str, backend: str) -> Path:
    """The catalog's cached index (the one ``recgen index`` / ``recgen fit`` with this backend saved), built
    now with this checkout's code when absent; reused by every child of both sides."""
    from recgen.config import RetrievalSettings
    from recgen.data import load_dataset
    from recgen.retrieval.cache import index_folder, load_or_build_index

    catalog = load_dataset(data).catalog
    folder = index_folder(Path(data).name, catalog.fingerprint(), None)
    t0 = time.perf_counter()
    retriever = load_or_build_index(catalog, RetrievalSettings(embed_backend=backend), folder)
    print(f"{data}: index ready in {time.perf_counter() - t0:.0f} s: {retriever.index_meta.describe()}",
          file=sys.stderr)
    return folder


def compare(old: Path, new: Path) -> dict:
    """Old vs new pools of the same users: identical rows (share of groups), row overlap, feature differences."""
    a, b = np.load(old), np.load(new)
    n = len([k for k in a.files if k.startswith("rows")])
    same, overlap, diff = 0, [], {str(name): 0.0 for name in a["names"]}
    for i in range(n):
        ra, rb = a[f"rows{i}"], b[f"rows{i}"]
        same += int(np.array_equal(ra, rb))
        overlap.append(len(np.intersect1d(ra, rb)) / max(len(ra), 1))
        _, ia, ib = np.intersect1d(ra, rb, return_indices=True)
        xa, xb = a[f"X{i}"][ia], b[f"X{i}"][ib]  # a row both pools hold (its ranks differ where the tops did)
        for j, name in enumerate(diff):
            d = np.abs(np.nan_to_num(xa[:, j], nan=-1e9) - np.nan_to_num(xb[:, j], nan=-1e9))
            diff[name] = max(diff[name], float(d.max()) if len(d) else 0.0)
    return {"groups": n, "identical_groups": same, "mean_row_overlap": round(float(np.mean(overlap)), 5),
            "max_feature_diff_on_common_rows": diff}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", action="append", required=True, help="recgen synth folder (repeatable)")
    parser.add_argument("--old-src", required=True, help="a checkout of the code to compare against")
    parser.add_argument("--users", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--embed-backend", default="onnx-int8")
    parser.add_argument("--out", help="write <out>.json and <out>.md")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index", help=argparse.SUPPRESS)
    parser.add_argument("--dump", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(argparse.Namespace(**{**vars(args), "data": args.data[0]}))
        return
    cache = Path(os.environ.get("RECGEN_CACHE_DIR", ".")) / "bench-scan-topk"
    cache.mkdir(parents=True, exist_ok=True)
    new_src = str(Path(__file__).resolve().parents[1])
    sides = {"old": str(Path(args.old_src).resolve()), "new": new_src}
    results = {"command": "python benchmarks/scan_topk.py " + shlex.join(
        [a if not os.path.isabs(a) else Path(a).name for a in sys.argv[1:]]),
        "batch": BATCH, "depth": DEPTH, "embed_backend": args.embed_backend, "sizes": {}}
    for data in args.data:
        index = prepare(data, args.embed_backend)
        runs = {"old": [], "new": []}
        dumps = {side: cache / f"{Path(data).name}-{side}.npz" for side in sides}
        for rep in range(args.repeat):
            for side, src in sides.items():
                cmd = [sys.executable, __file__, "--child", "--data", data, "--index", str(index), "--old-src", "-",
                       "--users", str(args.users), "--embed-backend", args.embed_backend]
                if rep == 0:
                    cmd += ["--dump", str(dumps[side])]
                env = {**os.environ, "PYTHONPATH": src}
                out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
                runs[side].append(json.loads(out.strip().splitlines()[-1]))
                print(Path(data).name, side, runs[side][-1], file=sys.stderr, flush=True)
        results["sizes"][Path(data).name] = {
            "runs": runs, "old_vs_new": compare(dumps["old"], dumps["new"]),
            "wall_ratio_old_over_new": round(float(np.median([o["wall_s"] for o in runs["old"]]) /
                                                   np.median([n["wall_s"] for n in runs["new"]])), 2),
            "cpu_ratio_old_over_new": round(float(np.median([o["cpu_s"] for o in runs["old"]]) /
                                                  np.median([n["cpu_s"] for n in runs["new"]])), 2)}
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out + ".json").write_text(json.dumps(results, indent=2) + "\n")
        Path(args.out + ".md").write_text(markdown(results))


def markdown(results: dict) -> str:
    lines = ["# Feature building: old (dense-chunk text/hybrid tops) vs new (index search + sparse union)", "",
             f"`{results['command']}`", "",
             f"Depth-{results['depth']} feature groups in batches of {results['batch']}; catalog embedded with "
             f"{results['embed_backend']}; old and new alternate in one run (load = 1-min load average before/after "
             "each child).", "",
             "| size | side | users | index | wall ms/user | CPU ms/user | peak RSS before → after features (MB) | load |",
             "|---|---|---|---|---|---|---|---|"]
    for size, res in results["sizes"].items():
        for side in ("old", "new"):
            for run in res["runs"][side]:
                lines.append(f"| {size} | {side} | {run['users']} | {run['index'].split(':')[0]} | "
                             f"{run['wall_ms_per_user']} | {run['cpu_ms_per_user']} | "
                             f"{run['peak_rss_mb_before_features']} → {run['peak_rss_mb_after_features']} | "
                             f"{run['load_before']:.1f}–{run['load_after']:.1f} |")
    lines += ["", "| size | wall old/new | CPU old/new | old vs new pools (first 128 users) |", "|---|---|---|---|"]
    for size, res in results["sizes"].items():
        c = res["old_vs_new"]
        differ = {k: v for k, v in c["max_feature_diff_on_common_rows"].items() if v > 0}
        lines.append(f"| {size} | {res['wall_ratio_old_over_new']} | {res['cpu_ratio_old_over_new']} | "
                     f"{c['identical_groups']}/{c['groups']} identical, row overlap {c['mean_row_overlap']}; "
                     f"features differing on common rows (max abs): "
                     f"{', '.join(f'{k} {v:.3g}' for k, v in differ.items()) or 'none'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
