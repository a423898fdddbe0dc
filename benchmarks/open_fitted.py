"""Time to open a dataset's fitted folder the way every entry point does (``open_dataset``), and its peak RSS.

    python benchmarks/open_fitted.py --dataset <synth-data>/L --config eval/results/scale/fit-L-config.json

Prints one JSON line. Run it from two checkouts in turn (``PYTHONPATH=<checkout>``) to compare versions on the
same load; the 1-minute load average is printed with each run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

from recgen.config import RecgenConfig
from recgen.recommender import open_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--config", default=None)
    args = parser.parse_args()
    config = RecgenConfig.from_file(args.config) if args.config else None
    started = time.perf_counter()
    open_dataset(args.dataset, config)
    print(json.dumps({"open_s": round(time.perf_counter() - started, 1),
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "load1": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
