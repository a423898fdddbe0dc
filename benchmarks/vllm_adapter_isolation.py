"""Leak or numerics? Two LoRA adapters in one vLLM batch against an engine serving one adapter alone.

Issue 22: a CI run found a mixed batch's adapter-``a`` rows 0.0903 nats away from a single-adapter engine. This
scores the ranker's real ml-100k prompts under controlled batch shapes — the same batch twice, half the batch,
all-``a`` on the two-adapter engine, mixed ``a``/``b`` fresh and after other work (base and all-``a`` batches that
fill the prefix cache) — and writes each comparison's largest absolute difference. A leak would move ``a`` rows
toward adapter ``b`` (or the base model); numerics would show as small differences with the same ranking.

Run in the vLLM venv: ``.venv-vllm/bin/python benchmarks/vllm_adapter_isolation.py --data ../shared/data
--out eval/results/vllm/adapter-isolation.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # make_lora: the tests' LoRA maker

ENGINE = {"kv_cache_gib": 1.0, "enforce_eager": True, "max_model_len": 2048}


def rank_prompts(data, users: range):
    from recgen.config import PromptSettings
    from recgen.ranking.ranker import RankRequest, build_rank_prompt

    popular, out = data.popularity(), []
    for n, user in enumerate(sorted(data.sequences)[users.start:users.stop]):
        seq = data.sequences[user]
        history, target = seq[:-1], seq[-1]
        candidates = [target] + [i for i in popular if i not in set(history) and i != target][:19]
        random.Random(n).shuffle(candidates)
        out.append(build_rank_prompt(data.catalog, RankRequest(history, None, candidates, 10), PromptSettings()))
    return out


def max_diff(x, y) -> float:
    return max(abs(a - b) for r1, r2 in zip(x, y) for a, b in zip(r1, r2))


def main() -> None:
    from test_vllm_adapters import make_lora

    from recgen.config import LMSettings
    from recgen.data import load_dataset
    from recgen.lm.resolve import resolve_lm
    from recgen.lm.vllm_engine import VLLMBackend

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="folder holding ml-100k")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    data = load_dataset(str(Path(args.data) / "ml-100k"))
    prompts = rank_prompts(data, range(0, 20))
    labels = [list(p.labels) for p in prompts]
    a_rows = list(range(0, len(prompts), 2))
    tag = lambda names: [replace(p, adapter=names[n % len(names)]) for n, p in enumerate(prompts)]
    rows = lambda scores: [scores[n] for n in a_rows]
    root = Path(tempfile.mkdtemp(prefix="recgen-loras-"))
    model = resolve_lm(None)
    loras = {name: str(make_lora(model, root / name, seed=seed)) for name, seed in (("a", 1), ("b", 2))}

    single = VLLMBackend.from_settings(LMSettings(backend="vllm", adapters={"a": loras["a"]}, adapter="a", **ENGINE))
    ref_a = single.score_labels(tag(["a"]), labels)
    ref_base = single.score_labels(tag(["base"]), labels)
    again = [single.score_labels(tag(["a"]), labels) for _ in range(2)]
    single.close()
    del single
    gc.collect()

    both = VLLMBackend.from_settings(LMSettings(backend="vllm", adapters=loras, **ENGINE))
    steps = []

    def mixed(step: str) -> None:
        scores = both.score_labels(tag(["a", "b"]), labels)
        steps.append({"step": step, "a_rows_vs_single_adapter_engine": max_diff(rows(scores), rows(ref_a)),
                      "a_rows_vs_base_model": max_diff(rows(scores), rows(ref_base)), "t": time.time()})
        print(steps[-1], flush=True)

    for r in range(args.repeats):
        mixed(f"mixed, repeat {r}")
    all_a = both.score_labels(tag(["a"]), labels)
    all_b = both.score_labels(tag(["b"]), labels)
    both.score_labels(tag(["base"]), labels)
    mixed("mixed after a base batch")
    mixed("mixed after all-a and all-b batches")
    both.close()
    out = {"command": "python benchmarks/vllm_adapter_isolation.py --data <data> --out <this file>",
           "engine": ENGINE, "prompts": len(prompts), "a_rows": len(a_rows),
           "same_batch_twice_single_engine": [max_diff(ref_a, x) for x in again],
           "all_a_two_adapter_engine_vs_single_engine": max_diff(all_a, ref_a),
           "adapter_a_vs_adapter_b": max_diff(rows(all_a), rows(all_b)),
           "adapter_a_vs_base_model": max_diff(rows(ref_a), rows(ref_base)),
           "mixed_batches": steps}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
