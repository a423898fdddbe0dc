"""``recgen eval reasons``: how grounded, personal and fluent the served reasons are, on a seeded sample of users.

For each sampled user the history is the user's training items and the list is the served recommender's top
``k`` for that history (retrieval → LM ranking); the reasoner then writes one reason per item, exactly as
served (greedy decoding). Each reason, and the LM's own text before the fact check replaced it, is graded by
:mod:`recgen.evaluation.reason_metrics` against :class:`~recgen.reasons.facts.ReasonFacts`.

With ``requests`` (``--requests``) each user also asks for something: a request in words built from the user's
validation item's own attributes (:class:`recgen.data.requests.RequestBuilder`, seeded: "a 90s comedy film" on
MovieLens, a product word of the title on Amazon), so the list is the served list for that history and
request and each reason is graded with the request among its facts ("names the request's facts").

Files: the aggregate (``<results>/<dataset>/<variant>-u<N>-s<seed>.json`` + ``.md``, and ``TABLE.md`` with
every variant side by side) holds no dataset text and is committed. The per-user rows (resumable: a rerun
skips finished users) and the audit file (a seeded sample of reasons with their facts, for a person to grade)
quote titles and genres, which the datasets' terms forbid copying into the repository, so they go to
``--audit-dir`` (default ``~/.cache/recgen/reasons``); anyone with the dataset regenerates them with the same
command.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..config import RecgenConfig
from ..data import load_dataset
from ..data.requests import RequestBuilder
from ..errors import ConfigError, RecgenError
from ..lm.factory import make_backend
from ..paths import cache_dir, results_root
from ..reasons.asked import asked_of
from ..reasons.checker import ReasonChecker, clean_reason
from ..reasons.facts import RELATED_QUANTILE, ReasonFacts, names_title, similarity_threshold
from ..reasons.grounding import display_title
from ..recommender import Recommender
from ..retrieval.cache import index_folder
from ..retrieval.request_constraints import RequestReader
from .protocol import EvalData, pseudonym, sample_users
from .reason_agreement import agreement, agreement_markdown, read_grades
from .reason_metrics import example_reasons, grade_reason, latency, summarize
from .runfiles import write_run_file


def reason_results_dir(explicit: Path | None = None) -> Path:
    """Where reason aggregates go: ``explicit``, else ``reasons/`` under the results root."""
    return Path(explicit) if explicit is not None else results_root() / "reasons"


def default_audit_dir() -> Path:
    return cache_dir() / "reasons"


@dataclass
class ReasonEvalSpec:
    dataset: str = "ml-100k"
    users: int = 200
    seed: int = 0
    k: int = 10
    variant: str = "today"
    config: RecgenConfig = field(default_factory=RecgenConfig)
    results_dir: Path | None = None  # None: <paths.results_root()>/reasons
    audit_dir: Path | None = None
    audit_size: int = 150
    overwrite: bool = False
    grade_only: bool = False
    hand_graded: Path | None = None
    command: str = ""
    requests: bool = False

    def run_name(self, n_users: int) -> str:
        return (f"{self.variant}{'-requests' if self.requests else ''}-u{n_users}-s{self.seed}"
                + (f"-k{self.k}" if self.k != 10 else ""))


class RecordingBackend:
    """Passes every call to ``backend``; while ``recording``, keeps the prompts and texts of ``generate_text``
    (the LM's own words, which the reasoner replaces when its fact check fails)."""

    def __init__(self, load: Callable[[], object]):
        self._load = load
        self._backend = None
        self.recording = False
        self.calls: list[tuple[list, list[str]]] = []

    @property
    def backend(self):
        """Loaded on first use: a rerun whose users are all done only regrades and never loads the LM."""
        if self._backend is None:
            self._backend = self._load()
        return self._backend

    def generate_text(self, prompts, *args, **kwargs):
        texts = self.backend.generate_text(prompts, *args, **kwargs)
        if self.recording:
            self.calls.append((list(prompts), list(texts)))
        return texts

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.backend, name)


def _config_key(spec: ReasonEvalSpec) -> str:
    text = json.dumps([spec.dataset, spec.k, spec.config.model_dump(mode="json")] + (["requests"] if spec.requests else []),
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _read_rows(path: Path, key: str) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a torn last line (the job was killed mid-write)
            if row.get("header"):
                if row["config_key"] != key:
                    raise RecgenError(f"{path} holds rows of another configuration (variant name reused); pass "
                                      "--overwrite to start it again, or another --variant")
                continue
            rows.append(row)
    return rows


def _prompt_texts(prompt) -> list[str]:
    return [m.get("content", "") for m in getattr(prompt, "messages", [])]


def run_reason_eval(spec: ReasonEvalSpec, log: Callable[[str], None] = lambda m: None) -> dict:
    """Run (or resume) one variant; returns the summary that is written to the results folder."""
    if spec.k < 1:
        raise ConfigError("--k must be at least 1")
    started = time.perf_counter()
    cfg = spec.config
    data = EvalData.from_dataset(load_dataset(spec.dataset))
    catalog = data.dataset.catalog
    positions = sample_users(data.n_users, spec.users, spec.seed)
    name = spec.run_name(len(positions))
    private = Path(spec.audit_dir or default_audit_dir()) / data.dataset.name
    private.mkdir(parents=True, exist_ok=True)
    rows_path = private / f"{name}.rows.jsonl"
    key = _config_key(spec)
    if spec.overwrite and rows_path.is_file():
        rows_path.unlink()
    rows = _read_rows(rows_path, key)
    done = {row["position"] for row in rows}
    todo = [] if spec.grade_only else [int(p) for p in positions if int(p) not in done]
    log(f"{data.dataset.name}: {len(positions)} users, {len(done)} done, {len(todo)} to go ({rows_path})")
    recorder = RecordingBackend(lambda: make_backend(cfg.lm))
    rec = Recommender.from_dataset(data.train_dataset(), cfg, backend=recorder, index_dir=index_folder(
        data.dataset.name, catalog.fingerprint(), cfg.retrieval.embedder))
    embeddings = rec.retriever.item_embeddings
    threshold = similarity_threshold(embeddings, RELATED_QUANTILE, seed=spec.seed)
    checker = ReasonChecker(catalog)
    window = cfg.prompt.history
    builder = RequestBuilder(catalog) if spec.requests else None
    with rows_path.open("a", encoding="utf-8") as out:
        if not rows:
            out.write(json.dumps({"header": True, "config_key": key, "spec": _spec_dict(spec)}) + "\n")
        for n, p in enumerate(todo):
            history = [catalog.items[i].item_id for i in data.train[p]]
            query = None
            if builder is not None:  # seeded per user: a resumed run asks the same
                request = builder.positive(catalog.items[data.target("valid", p)], random.Random(f"{spec.seed}-{p}"))
                if request is None:
                    continue  # the item has nothing to ask for (no genre, no product word)
                query = request.text
            t0 = time.perf_counter()
            found = rec.recommend(history=history, query=query, k=spec.k, reasons=False)
            listed = [r.item_id for r in found]
            t1 = time.perf_counter()
            recorder.calls.clear()
            recorder.recording = True
            try:
                served = rec.explain(history, query, listed)
            finally:
                recorder.recording = False
            t2 = time.perf_counter()
            row = _record_user(data, p, history, listed, served, recorder.calls)
            row.update(rank_s=round(t1 - t0, 3), reasons_s=round(t2 - t1, 3))
            if query is not None:
                row.update(query=query, unused_words=list(found.unused_words))
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            out.flush()
            rows.append(row)
            if (n + 1) % 10 == 0 or n + 1 == len(todo):
                log(f"{n + 1}/{len(todo)} users ({t2 - t1:.1f} s for the last list of reasons)")
    rows.sort(key=lambda r: r["position"])
    rows = grade_rows(rows, catalog, window, embeddings, threshold, checker)
    summary = _summary(spec, data.dataset.name, name, rows, threshold, time.perf_counter() - started)
    summary["users_planned"] = len(positions)
    if spec.hand_graded is not None:
        grades = [g for g in read_grades(spec.hand_graded) if g.get("run", name) == name]
        summary["hand_graded"] = agreement(grades, rows)
        summary["hand_graded"]["file"] = str(spec.hand_graded)
        folder = reason_results_dir(spec.results_dir) / data.dataset.name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.agreement.md").write_text(agreement_markdown(
            summary["hand_graded"], f"Hand grades vs the automatic measure: {data.dataset.name}, {name}") + "\n")
    write_results(reason_results_dir(spec.results_dir), summary)
    write_audit(private, name, rows, spec.audit_size, spec.seed)
    return summary


def _record_user(data: EvalData, p: int, history: list[str], listed: list[str], served: list[tuple[str, str]],
                 calls: list) -> dict:
    """What one user's run produced, ungraded (grading is redone on every aggregation, so a change to the
    measures never needs the LM again): the served reasons, the LM's own texts and the prompts' examples."""
    prompts, texts = ([], [])
    if len(calls) == 1 and len(calls[0][1]) == len(listed):
        prompts, texts = calls[0]
    reasons = []
    for rank, (item_id, (text, source)) in enumerate(zip(listed, served)):
        entry = {"rank": rank + 1, "item_id": item_id, "source": source, "served_text": text}
        if texts:
            entry["raw"] = texts[rank]
            entry["examples"] = example_reasons(_prompt_texts(prompts[rank]))
        reasons.append(entry)
    return {"position": int(p), "user": pseudonym(data.user_ids[p]), "user_id": data.user_ids[p],
            "history": history, "reasons": reasons}


def grade_rows(rows: list[dict], catalog, window: int, embeddings: np.ndarray | None, threshold: float | None,
               checker: ReasonChecker) -> list[dict]:
    """Rows with each reason's facts and verdicts (served text, and the LM's cleaned text when recorded).

    The facts are the reasoner's history window plus any earlier history item a text names: the user liked
    it too, so naming it is true (and the fact check is given the same history)."""
    graded = []
    reader = RequestReader(catalog) if any(row.get("query") for row in rows) else None
    for row in rows:
        full = [catalog.get(i) for i in row["history"]]
        past = full[-window:]
        older = full[:-window]
        reasons = []
        for r in row["reasons"]:
            item = catalog.get(r["item_id"])
            texts = {"served": r["served_text"]}
            if "raw" in r:  # cut as the reasoner cuts it: a "!" inside a title does not end the sentence
                names = [t for i in [item, *full] for t in (i.title, display_title(i.title))]
                texts["model"] = clean_reason(r["raw"], titles=names)
            earlier = [h for h in dict.fromkeys(older) if any(names_title(t, h.title) for t in texts.values())]
            history = earlier + past
            facts = ReasonFacts.for_item(catalog, item, history, row.get("query"))
            examples = r.get("examples") or []
            entry = {"rank": r["rank"], "item_id": r["item_id"], "source": r["source"], "facts": facts.lines()}
            asked = asked_of(item, row.get("query"), reader.read(row["query"])) if row.get("query") else None
            for kind, text in texts.items():
                verdict = grade_reason(text, facts, history=full, examples=examples, embeddings=embeddings,
                                       threshold=threshold, checker_problems=checker.problems(text, item, history),
                                       asked=asked)
                entry[kind] = {"text": text, "verdict": verdict.to_dict()}
            if "raw" in r:
                entry["model"]["raw"] = r["raw"]
            reasons.append(entry)
        graded.append({**row, "reasons": reasons})
    return graded


def _share_of(flags: list[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def _spec_dict(spec: ReasonEvalSpec) -> dict:
    return {"dataset": spec.dataset, "users": spec.users, "seed": spec.seed, "k": spec.k, "variant": spec.variant,
            "requests": spec.requests, "config": spec.config.model_dump(mode="json", exclude_defaults=True)}


def _summary(spec: ReasonEvalSpec, dataset: str, name: str, rows: list[dict], threshold: float, wall: float) -> dict:
    return {
        "run_name": name, "dataset": dataset, "variant": spec.variant, "users": len(rows), "seed": spec.seed,
        "requests": "a request per user from its validation item's attributes (RequestBuilder.positive)"
        if spec.requests else None,
        "with_unused_words": _share_of([bool(r.get("unused_words")) for r in rows if "query" in r]),
        "k": spec.k, "command": spec.command, "config": spec.config.model_dump(mode="json", exclude_defaults=True),
        "related_similarity_threshold": round(threshold, 4), "related_quantile": RELATED_QUANTILE,
        "served": summarize(rows, "served"), "model_text": summarize(rows, "model"), "latency": latency(rows),
        "ranking_s_per_list": round(float(np.mean([r["rank_s"] for r in rows])), 3) if rows else None,
        "wall_s_this_invocation": round(wall, 1),
    }


# -- files ------------------------------------------------------------------------------------------

_TABLE_ROWS = [
    ("model-written and passing every check", ("served", "model_written_and_passing")),
    ("model-written (reason_source = model)", ("served", "source_shares", "model")),
    ("passing, among model-written", ("served", "passing_among_model_written")),
    ("supported content words", ("served", "grounding", "supported_word_share")),
    ("reasons with an unsupported claim (word or fact check)", ("served", "grounding", "with_unsupported_claim")),
    ("  with an unsupported content word", ("served", "grounding", "with_unsupported_word")),
    ("names a history item", ("served", "personalisation", "names_history_item")),
    ("names a related history item or the request", ("served", "personalisation", "names_related_item_or_request")),
    ("degenerate (any)", ("served", "degenerate", "any")),
    ("  repetition", ("served", "degenerate", "repetition")),
    ("  empty or truncated", ("served", "degenerate", "empty_or_truncated")),
    ("  says nothing beyond the title", ("served", "degenerate", "says_nothing")),
    ("  copies the few-shot example", ("served", "degenerate", "copies_few_shot_example")),
    ("distinct-1 per list", ("served", "degenerate", "distinct_1_per_list")),
    ("distinct-2 per list", ("served", "degenerate", "distinct_2_per_list")),
    ("lists with a sentence twice", ("served", "degenerate", "lists_with_a_sentence_twice")),
    ("with a request: names the request's facts", ("served", "request", "names_the_request_facts")),
    ("  items meeting the request", ("served", "request", "items_meeting_the_request")),
    ("  names them, among items meeting it", ("served", "request", "names_the_request_facts_among_items_meeting_it")),
    ("lists with unused request words", ("with_unused_words",)),
    ("LM text: passes the served fact check", ("model_text", "checker_rejected")),
    ("LM text: with an unsupported claim", ("model_text", "grounding", "with_unsupported_claim")),
    ("LM text: names a related history item or the request",
     ("model_text", "personalisation", "names_related_item_or_request")),
    ("LM text: degenerate", ("model_text", "degenerate", "any")),
    ("hand-graded reasons (served + LM text)", ("hand_graded", "matched")),
    ("  hand vs auto 'supported': % agreement", ("hand_graded", "all", "supported", "percent_agreement")),
    ("  hand vs auto 'supported': Cohen's kappa", ("hand_graded", "all", "supported", "cohen_kappa")),
    ("  hand vs auto 'personal': % agreement", ("hand_graded", "all", "personal", "percent_agreement")),
    ("  hand vs auto 'personal': Cohen's kappa", ("hand_graded", "all", "personal", "cohen_kappa")),
    ("seconds per list of reasons (mean)", ("latency", "per_list_s", "mean")),
    ("seconds per reason (mean)", ("latency", "per_reason_s", "mean")),
]


def _get(summary: dict, path: tuple) -> float | None:
    value = summary
    for part in path:
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    if path == ("model_text", "checker_rejected") and value is not None:
        return round(1 - value, 4)
    return value


def _fmt(value) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _markdown(summaries: list[dict]) -> str:
    def users(s: dict) -> str:
        planned = s.get("users_planned", s["users"])
        return f"{s['users']} users" if planned == s["users"] else f"first {s['users']} of {planned} users"

    head = "| measure | " + " | ".join(f"{s['variant']} ({users(s)}, k={s['k']})" for s in summaries) + " |"
    lines = [head, "|---|" + "---|" * len(summaries)]
    for label, path in _TABLE_ROWS:
        lines.append(f"| {label} | " + " | ".join(_fmt(_get(s, path)) for s in summaries) + " |")
    lines.append("")
    for s in summaries:
        lines.append(f"- `{s['run_name']}`: `{s['command']}`")
    return "\n".join(lines) + "\n"


def write_results(results_dir: Path, summary: dict) -> list[Path]:
    """``<variant>.json`` + ``.md`` for this run, and ``TABLE.md`` with every run of the dataset side by side."""
    folder = Path(results_dir) / summary["dataset"]
    path = write_run_file(folder, summary["run_name"], summary)
    (folder / f"{summary['run_name']}.md").write_text(
        f"# Reasons on {summary['dataset']}: {summary['run_name']}\n\n" + _markdown([summary]))
    runs = []
    for other in sorted(folder.glob("*.json")):
        try:
            loaded = json.loads(other.read_text())
        except ValueError:
            continue
        if isinstance(loaded, dict) and "served" in loaded and "variant" in loaded:
            runs.append(loaded)
    table = folder / "TABLE.md"
    table.write_text(f"# Reason quality on {summary['dataset']}, every variant (`recgen eval reasons`)\n\n"
                     "Shares are over all reasons (users x k); see NOTES.md for what each measure means.\n\n"
                     + _markdown(runs))
    return [path, table]


def audit_sample(rows: list[dict], size: int, seed: int) -> list[tuple[dict, dict]]:
    """A seeded sample of (user row, reason) pairs, the same for every variant run on the same users."""
    pairs = [(row, r) for row in rows for r in row["reasons"]]
    pairs.sort(key=lambda pr: (pr[0]["user"], pr[1]["rank"]))
    if size >= len(pairs):
        return pairs
    rng = np.random.default_rng(seed)
    picked = sorted(rng.choice(len(pairs), size=size, replace=False).tolist())
    return [pairs[i] for i in picked]


def write_audit(folder: Path, name: str, rows: list[dict], size: int, seed: int) -> list[Path]:
    """``<name>.audit.jsonl`` and ``.audit.md``: reasons with their facts and the automatic verdicts."""
    if not rows:
        return []
    records = []
    for row, r in audit_sample(rows, size, seed):
        records.append({"id": f"{row['user']}-{r['rank']}", "user": row["user"], "rank": r["rank"],
                        "item_id": r["item_id"], "source": r["source"], "facts": r.get("facts"),
                        "served": r["served"], "model": r.get("model")})
    jsonl = folder / f"{name}.audit.jsonl"
    jsonl.write_text("".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records), encoding="utf-8")
    md = [f"# Audit: {name}", "", "Each reason with the facts it may use and the automatic verdict. Grade: "
          "supported / has an unsupported claim; personal / not.", ""]
    for rec in records:
        md.append(f"## {rec['id']} ({rec['source']})")
        md += [f"- {line}" for line in rec["facts"] or []]
        v = rec["served"]["verdict"]
        md.append(f"- **served**: {rec['served']['text']}")
        md.append(f"  - unsupported: {v['unsupported']}; names: {v['named_history']}; related: {v['related_named']}; "
                  f"degenerate: {v['degenerate']}; checker: {v['checker_problems']}")
        if rec["model"] and rec["source"] != "model":
            mv = rec["model"]["verdict"]
            md.append(f"- **LM text (replaced)**: {rec['model']['text']}")
            md.append(f"  - unsupported: {mv['unsupported']}; degenerate: {mv['degenerate']}; "
                      f"checker: {mv['checker_problems']}")
        md.append("")
    (folder / f"{name}.audit.md").write_text("\n".join(md), encoding="utf-8")
    return [jsonl, folder / f"{name}.audit.md"]
