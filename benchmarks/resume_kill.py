"""What a kill costs, before (no checkpoints) and after (chunk and trial checkpoints), issue 24.

    python benchmarks/resume_kill.py embedding --data <synth-S folder> --old <a copy of the code before> \
        --chunk 1000 --work <scratch> --out eval/results/scale/resume_embedding
    python benchmarks/resume_kill.py selection --data <synth-XS folder> --old <a copy of the code before> \
        --trials 3 --work <scratch> --out eval/results/scale/resume_selection

For each code version (``--old``: a copy of the repository before the change, e.g. from ``git archive``; the new
one is this repository) a process is started with a fresh cache, SIGKILLed midway and restarted with the same
command; the restart's wall time (process start to exit) is recorded with what it reused. The runs are interleaved
(old kill, new kill, old restart, new restart) and the 1-minute load average is read around each.

- ``embedding``: ``recgen index -d <data>``, killed once half of the catalog is embedded (new: half of the chunk
  files are on disk; old: sentence-transformers' progress bar passed 50 % of its batches). The new side gets
  ``fit.embed_checkpoint = --chunk`` through ``--config``; the old ``recgen index`` had no ``--config`` and embeds
  with the same default (torch) backend.
- ``selection``: ``recgen fit -d <data> --threads 1`` with the index already in both caches (built once by the new
  code and copied: the same files), killed once ``--trials`` log lines hold ``--after`` (default: finished LightGBM
  trials, "fusion ranker:", the same lines on both sides); the restart's "second stage" time is read from its
  ``--json`` summary.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load() -> float:
    return os.getloadavg()[0]


def env_for(code: Path, cache: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(code), "RECGEN_CACHE_DIR": str(cache), "TOKENIZERS_PARALLELISM": "false",
            "COLUMNS": "400"}


def recgen(*args: str) -> list[str]:
    return [sys.executable, "-m", "recgen.cli.main", *args]


def kill_when(cmd: list[str], code: Path, cache: Path, log: Path, ready) -> dict:
    """Start ``cmd``, SIGKILL it once ``ready(log)``; what it left in the cache."""
    started, before = time.monotonic(), load()
    with open(log, "wb") as err:
        proc = subprocess.Popen(cmd, env=env_for(code, cache), cwd=code, stdout=subprocess.DEVNULL, stderr=err)
    while not ready(log):
        if proc.poll() is not None:
            raise SystemExit(f"{code}: the run ended before the kill point; see {log}")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return {"killed_after_s": round(time.monotonic() - started, 1), "load_1min_before": round(before, 2),
            "files_in_cache": sum(1 for p in cache.rglob("*") if p.is_file())}


def run(cmd: list[str], code: Path, cache: Path, log: Path) -> tuple[str, dict]:
    started, before = time.monotonic(), load()
    with open(log, "wb") as err:
        out = subprocess.run(cmd, env=env_for(code, cache), cwd=code, stdout=subprocess.PIPE, stderr=err, check=True,
                             text=True).stdout
    return out, {"restart_wall_s": round(time.monotonic() - started, 1), "load_1min_before": round(before, 2),
                 "load_1min_after": round(load(), 2)}


def embedding(args, sides) -> dict:
    config = args.work / "chunks.json"
    config.write_text(json.dumps({"fit": {"embed_checkpoint": args.chunk}}))
    items = sum(1 for _ in open(args.data / "items.jsonl", encoding="utf-8"))
    chunks = -(-items // args.chunk)

    def ready(side: str, cache: Path):
        if side == "new":
            return lambda log: len(list(cache.glob("indexes/*.embedding/chunk-*.json"))) >= chunks // 2
        return lambda log: any(int(p) >= 50 for p in re.findall(rb"Batches:\s+(\d+)%", log.read_bytes()))

    def cmd(side: str) -> list[str]:  # the old side shows its progress bar only without --json
        return recgen("index", "-d", str(args.data), *(["--config", str(config), "--json"] if side == "new" else []))

    result = {"items": items, "chunk": args.chunk, "chunks": chunks, "runs": {}}
    for side, code in sides.items():
        cache = args.work / f"cache-{side}"
        result["runs"][side] = {"kill": kill_when(cmd(side), code, cache, args.work / f"{side}-kill.log",
                                                  ready(side, cache))}
    for side, code in sides.items():
        out, timing = run(cmd(side), code, args.work / f"cache-{side}", args.work / f"{side}-restart.log")
        if side == "new":
            info = json.loads(out)
            timing.update(index_build_s=info["seconds"], embedding=info["embedding"])
        else:  # "indexed N items of D in X s -> folder", on stderr
            said = (args.work / f"{side}-restart.log").read_text(errors="replace")
            timing.update(index_build_s=float(re.search(r"indexed \d+ items of .* in ([\d.]+) s", said).group(1)),
                          embedding="all titles (nothing was kept)")
        result["runs"][side]["restart"] = timing
    return result


def selection(args, sides) -> dict:
    index_cache = args.work / "cache-index"
    run(recgen("index", "-d", str(args.data), "--json"), REPO, index_cache, args.work / "index.log")
    ready = lambda log: log.read_bytes().count(args.after.encode()) >= args.trials
    cmd = recgen("fit", "-d", str(args.data), "--threads", "1", "--json")
    result = {"kill_after": f"{args.trials} log lines with {args.after!r}", "runs": {}}
    for side, code in sides.items():
        cache = args.work / f"cache-{side}"
        shutil.copytree(index_cache / "indexes", cache / "indexes")
        result["runs"][side] = {"kill": kill_when(cmd, code, cache, args.work / f"{side}-kill.log", ready)}
    for side, code in sides.items():
        out, timing = run(cmd, code, args.work / f"cache-{side}", args.work / f"{side}-restart.log")
        info = json.loads(out)
        stages = {s["stage"]: s for s in info["stages"]}
        timing.update(second_stage_s=stages["second stage (selection on validation)"]["seconds"],
                      second_stage_cpu_s=stages["second stage (selection on validation)"]["cpu_seconds"],
                      chosen=info["chosen"], checkpoints=info.get("checkpoints"),
                      fusion_fit_seconds=info.get("fusion_fit_seconds"))
        result["runs"][side]["restart"] = timing
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("embedding", "selection"))
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--old", type=Path, required=True, help="a copy of the repository before the change")
    parser.add_argument("--chunk", type=int, default=1000, help="embedding: titles per checkpointed chunk")
    parser.add_argument("--trials", type=int, default=3, help="selection: kill once the log has this many ...")
    parser.add_argument("--after", default="fusion ranker:", help="selection: ... lines holding this text (default:"
                        " finished LightGBM trials; 'fusion: chose depth' = the main selection done, request stage next)")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder for the caches and logs")
    parser.add_argument("--out", type=Path, required=True, help="results path without extension (.json)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    sides = {"old": args.old.resolve(), "new": REPO}
    shown = [f"<{Path(a).name}>" if os.path.isabs(a) else a for a in sys.argv[1:]]  # no folder of this machine
    result = {"command": "python benchmarks/resume_kill.py " + shlex.join(shown),
              "cores": len(os.sched_getaffinity(0)), **(embedding if args.stage == "embedding" else selection)(args, sides)}
    old, new = (result["runs"][s]["restart"]["restart_wall_s"] for s in ("old", "new"))
    result["restart_wall_new_over_old"] = round(new / old, 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
