"""vLLM's CPU engine in bfloat16 vs float32 on this machine: seconds for a list of 10 reason prompts.

    .venv-vllm/bin/python benchmarks/vllm_cpu_dtype.py --reps 2 --out eval/results/vllm/cpu-dtype

Why: ``lm.dtype: auto`` picks bfloat16 only on CPUs with native bf16 (recgen.lm.cpu_precision); this measures
what the choice is worth here. One engine at a time (in-process, ``enforce_eager``, 1 GiB KV cache), each
started in its own process so the two never share the cores; ml-100k (``../shared/data``) or the synthetic
catalog; 3 users x the 10 most popular items, free-text reason prompts, 40 new tokens at most. Dtypes are
interleaved per repetition (A B, B A, ...); the prefix cache is not reset between lists, so the second list of a
repetition reuses the instruction prefix, as a server does. Writes ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

#: Prefix of the child's result line (vLLM writes its own lines to stdout too).
MARK = "RESULT "


def one_engine(dtype: str) -> dict:
    """Start an engine in ``dtype`` and time two lists of 10 reason prompts (run in a child process)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from builders import make_dataset
    from conftest import shared_data_dir

    from recgen.config import LMSettings, PromptSettings
    from recgen.data import load_dataset
    from recgen.lm.vllm_engine import VLLMBackend
    from recgen.reasons.prompts import build_reason_prompt

    found = shared_data_dir()
    dataset = load_dataset(str(found / "ml-100k")) if found else make_dataset()
    settings, prompts = PromptSettings(), []
    for user in sorted(dataset.sequences)[:3]:
        history = [dataset.catalog.get(i) for i in dataset.sequences[user][-5:]]
        items = [dataset.catalog.get(i) for i in dataset.popularity()[:10]]
        prompts.append([build_reason_prompt(item, history, None, settings) for item in items])
    start = time.perf_counter()
    backend = VLLMBackend.from_settings(LMSettings(backend="vllm", dtype=dtype, kv_cache_gib=1.0,
                                                   enforce_eager=True, max_model_len=2048))
    started = time.perf_counter() - start
    lists = []
    for batch in prompts:
        start = time.perf_counter()
        backend.generate_text(batch, 40)
        lists.append(round(time.perf_counter() - start, 3))
    return {"dtype": dtype, "start_s": round(started, 1), "seconds_per_list_of_10": lists}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--out", default="eval/results/vllm/cpu-dtype")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(MARK + json.dumps(one_engine(args.child)), flush=True)
        return
    from recgen.lm.cpu_precision import cpu_dtype, cpu_flags

    flags = cpu_flags() or frozenset()
    runs = []
    for rep in range(args.reps):
        for dtype in (("bfloat16", "float32") if rep % 2 == 0 else ("float32", "bfloat16")):
            load = os.getloadavg()[0]
            done = subprocess.run([sys.executable, __file__, "--child", dtype], capture_output=True, text=True,
                                  check=True)
            line = next(x for x in reversed(done.stdout.splitlines()) if x.startswith(MARK))
            runs.append({**json.loads(line[len(MARK):]), "repeat": rep, "load1_before": load})
            print(runs[-1], flush=True)
    out = {"command": "python benchmarks/vllm_cpu_dtype.py " + " ".join(sys.argv[1:]),
           "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": {
               "cores": os.cpu_count(), "python": platform.python_version(), "processor": platform.processor(),
               "native_bf16_flags": sorted(flags & {"avx512_bf16", "amx_bf16", "bf16"}),
               "avx512f": "avx512f" in flags, "avx2": "avx2" in flags},
           "auto_resolves_to": cpu_dtype("auto", flags or None), "runs": runs}
    for dtype in ("bfloat16", "float32"):
        lists = [s for r in runs if r["dtype"] == dtype for s in r["seconds_per_list_of_10"]]
        out[f"median_seconds_per_list_{dtype}"] = sorted(lists)[len(lists) // 2]
    Path(args.out + ".json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
