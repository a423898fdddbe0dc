"""What a kill during the catalog embedding costs, before (no checkpoint) and after (chunk checkpoints), issue 24.

    python benchmarks/resume_kill.py --data <synth-S folder> --old <a checkout of the code before> \
        --chunk 1000 --out eval/results/scale/resume_embedding

For each code version (``--old``: a copy of the repository before the change, e.g. ``git archive``; the new one is
this repository) a ``recgen index -d <data>`` process is started with a fresh cache, SIGKILLed once half of the
catalog is embedded (new: half of the chunk files are on disk; old: sentence-transformers' progress bar passed
half of its batches), and restarted with the same command; the restart's wall time (process start to exit) and the
titles it embedded are recorded. The runs are interleaved (old kill, new kill, old restart, new restart) and the
1-minute load average is read before each. The new version gets ``fit.embed_checkpoint = --chunk`` through
``--config``; the old ``recgen index`` had no ``--config`` and embeds with the same default (torch) backend.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load() -> float:
    return os.getloadavg()[0]


def command(data: Path, config: Path | None) -> list[str]:
    """The new side reports as JSON; the old one without ``--json`` (it shows its progress bar only then)."""
    return [sys.executable, "-m", "recgen.cli.main", "index", "-d", str(data),
            *(["--config", str(config), "--json"] if config else [])]


def env_for(code: Path, cache: Path) -> dict:
    return {**os.environ, "PYTHONPATH": str(code), "RECGEN_CACHE_DIR": str(cache), "TOKENIZERS_PARALLELISM": "false"}


def half_done_new(cache: Path, chunks: int, _log: Path) -> bool:
    return len(list(cache.glob("indexes/*.embedding/chunk-*.json"))) >= chunks // 2


def half_done_old(_cache: Path, _chunks: int, log: Path) -> bool:
    found = re.findall(rb"Batches:\s+(\d+)%", log.read_bytes()) if log.exists() else []
    return bool(found) and int(found[-1]) >= 50


def kill_half(code: Path, cache: Path, data: Path, config: Path | None, log: Path, done, chunks: int) -> dict:
    started, before = time.monotonic(), load()
    with open(log, "wb") as err:
        proc = subprocess.Popen(command(data, config), env=env_for(code, cache), cwd=code, stdout=subprocess.DEVNULL,
                                stderr=err)
    while not done(cache, chunks, log):
        if proc.poll() is not None:
            raise SystemExit(f"{code}: the index finished before half of it was embedded; see {log}")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    left = sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file())
    return {"killed_after_s": round(time.monotonic() - started, 1), "load_1min_before": round(before, 2),
            "files_left_in_cache": len(left), "chunk_files_left": sum(p.endswith(".npy") for p in left)}


def restart(code: Path, cache: Path, data: Path, config: Path | None, log: Path) -> dict:
    started, before = time.monotonic(), load()
    with open(log, "wb") as err:
        out = subprocess.run(command(data, config), env={**env_for(code, cache), "COLUMNS": "400"}, cwd=code,
                             stdout=subprocess.PIPE, stderr=err, check=True, text=True).stdout
    wall = round(time.monotonic() - started, 1)
    if config:
        info = json.loads(out)
        seconds, embedding = info["seconds"], info.get("embedding")
    else:  # "indexed N items of D in X s -> folder"
        seconds, embedding = float(re.search(r"in ([\d.]+) s", out).group(1)), "all titles (no checkpoint)"
    return {"restart_wall_s": wall, "index_build_s": seconds, "embedding": embedding,
            "load_1min_before": round(before, 2), "load_1min_after": round(load(), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--old", type=Path, required=True, help="a copy of the repository before the change")
    parser.add_argument("--chunk", type=int, default=1000)
    parser.add_argument("--work", type=Path, required=True, help="scratch folder for the caches and logs")
    parser.add_argument("--out", type=Path, required=True, help="results path without extension (.json)")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    config = args.work / "chunks.json"
    config.write_text(json.dumps({"fit": {"embed_checkpoint": args.chunk}}))
    items = sum(1 for _ in open(args.data / "items.jsonl", encoding="utf-8"))
    chunks = -(-items // args.chunk)
    sides = {"old": (args.old.resolve(), None, half_done_old), "new": (REPO, config, half_done_new)}
    result = {"command": "python benchmarks/resume_kill.py " + shlex.join(sys.argv[1:]), "items": items,
              "chunk": args.chunk, "chunks": chunks, "cores": len(os.sched_getaffinity(0)), "runs": {}}
    for side, (code, cfg, done) in sides.items():
        result["runs"][side] = {"kill": kill_half(code, args.work / f"cache-{side}", args.data, cfg,
                                                  args.work / f"{side}-kill.log", done, chunks)}
    for side, (code, cfg, _) in sides.items():
        result["runs"][side]["restart"] = restart(code, args.work / f"cache-{side}", args.data, cfg,
                                                  args.work / f"{side}-restart.log")
    old, new = (result["runs"][s]["restart"]["restart_wall_s"] for s in ("old", "new"))
    result["restart_wall_new_over_old"] = round(new / old, 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
