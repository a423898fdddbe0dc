"""Is a ranked list slowed by LM work in the same process? Latency of `Recommender.recommend` without reasons
alone, then while another thread keeps the LM generating (the server's scheduler thread under load).

    python benchmarks/fast_lane_beside_lm.py --dataset ml-100k --calls 150 --out eval/results/serving/fast_lane_beside_lm

Isolates the two in-process causes a server's requests without reasons could suffer from under mixed traffic:
CPU (the LM's torch threads, now at ``lm.nice``) and the GIL (Python's switch interval, ``--switch-interval``
values run in turn). Everything HTTP (uvicorn's loop, streaming, the lanes' queues) is outside this measure.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import threading
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--calls", type=int, default=150)
    parser.add_argument("--switch-interval", type=float, nargs="+", default=[0.005, 0.0005])
    parser.add_argument("--out", default="eval/results/serving/fast_lane_beside_lm")
    args = parser.parse_args()

    from recgen.config import LMSettings
    from recgen.lm.factory import make_backend
    from recgen.lm.prompt import ChatPrompt
    from recgen.recommender import open_dataset

    data, rec = open_dataset(args.dataset)
    users = list(data.sequences)[: args.calls + 30]
    lm = make_backend(LMSettings())
    prompts = [ChatPrompt(messages=[{"role": "user", "content": f"Why would someone like film {i}? One sentence."}])
               for i in range(10)]
    lm.generate_text(prompts, 24)  # loads the model and starts the scheduler thread

    def lane() -> list[float]:
        out = []
        for user in users[30:]:
            start = time.perf_counter()
            rec.recommend(data.sequences[user], k=10, reasons=False)
            out.append(time.perf_counter() - start)
        return out

    def ms(values: list[float]) -> dict:
        return {"p50": round(float(np.percentile(values, 50)) * 1e3, 2),
                "p95": round(float(np.percentile(values, 95)) * 1e3, 2)}

    for user in users[:30]:  # warm-up
        rec.recommend(data.sequences[user], k=10, reasons=False)
    rows = []
    for interval in args.switch_interval:
        sys.setswitchinterval(interval)
        load = os.getloadavg()[0]
        alone = lane()
        stop = threading.Event()
        batches = [0]

        def generate() -> None:
            while not stop.is_set():
                lm.generate_text(prompts, 24)
                batches[0] += 1

        worker = threading.Thread(target=generate, daemon=True)
        worker.start()
        time.sleep(2.0)
        beside = lane()
        stop.set()
        worker.join()
        rows.append({"switch_interval_s": interval, "alone_ms": ms(alone), "beside_lm_ms": ms(beside),
                     "lm_batches_meanwhile": batches[0], "lm_nice": lm.nice, "load_1min_before": round(load, 2),
                     "load_1min_after": round(os.getloadavg()[0], 2)})
        print(rows[-1], flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({
        "command": "python benchmarks/fast_lane_beside_lm.py " + shlex.join(sys.argv[1:]), "dataset": args.dataset,
        "calls": args.calls, "cores": len(os.sched_getaffinity(0)), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
