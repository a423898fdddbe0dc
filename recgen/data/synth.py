"""Synthetic datasets with structure a recommender can learn, at any size, written in recgen's generic format.

Why: every real dataset recgen has is benchmark-sized; cost curves up to a million items need data of a known
size, and "faster" must never be bought with a broken model, so the data has signal each source can find:

- items belong to topics; titles and attributes are drawn from the topic's vocabulary (text retrieval's signal);
- item popularity is a power law (Zipf over a random order) and topics are Zipf-popular too (popularity's signal);
- a share of items never occurs in an interaction (cold items: only their text can place them);
- each user likes a few topics, with weights that drift from the start of the history to its end (co-occurrence
  and recency signal);
- with probability ``p_markov`` the next item is one of the last item's few successors (sequential signal).

Everything is numpy-vectorised over users and streamed: items and users are generated in fixed-size chunks,
each from its own ``SeedSequence`` child, and written as they are made (bounded memory at 1 M items / 10 M
interactions); the same spec and seed give the same bytes. The folder is written atomically by
:func:`recgen.atomic.atomic_dir`, so a folder recgen did not write is never replaced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterator, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..atomic import atomic_dir, check_output_folder
from ..errors import ConfigError

#: Named sizes: S/M/L are the issue's (items, interactions, users); XS is for tests and quick checks.
SIZES: dict[str, tuple[int, int, int]] = {
    "XS": (1_000, 10_000, 1_000),
    "S": (10_000, 100_000, 10_000),
    "M": (100_000, 1_000_000, 100_000),
    "L": (1_000_000, 10_000_000, 1_000_000),
}
ITEM_CHUNK = 100_000  # items generated and written per chunk (fixed: part of what makes the bytes reproducible)
USER_CHUNK = 50_000  # users simulated per chunk
FORMATS = ("csv", "parquet")
INFO_FILE = "synth.json"
_CONSONANTS = list("bcdfghklmnprstvz") + ["ch", "sh", "th", "tr"]
_VOWELS = list("aeiou")


class SynthSpec(BaseModel):
    """What to generate. The structure parameters' defaults were set once so that on S the fused ranker beats
    popularity and itemknn (eval/results/scale/); they are properties of the data, not tuned per run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    items: int = Field(ge=10, description="catalog size")
    interactions: int = Field(ge=30, description="total interactions written")
    users: int = Field(ge=3, description="users; each has at least 3 interactions (interactions >= 3 x users)")
    seed: int = Field(0, ge=0, description="the one seed: same spec + seed, same bytes")
    topics: int | None = Field(None, ge=2, description="topics (default: ~sqrt(items)/3, within 5..400)")
    cold_share: float = Field(0.05, ge=0.0, lt=0.9, description="share of items with no interaction")
    zipf_items: float = Field(0.9, gt=0.0, description="exponent of item popularity within the catalog")
    zipf_topics: float = Field(0.7, ge=0.0, description="exponent of topic popularity among users")
    topics_per_user: int = Field(3, ge=1, description="topics a user draws from")
    p_switch: float = Field(0.15, ge=0.0, le=1.0, description="chance per step to re-draw the current topic")
    p_markov: float = Field(0.4, ge=0.0, le=1.0, description="chance per step to follow the last item's successor")
    successors: int = Field(4, ge=1, description="successors per item (the Markov transitions)")
    p_successor_same_topic: float = Field(0.7, ge=0.0, le=1.0,
                                          description="share of successors in the item's own topic "
                                                      "(the rest are in the next topic)")
    activity_sigma: float = Field(1.0, ge=0.0, description="log-normal spread of user activity (history length)")

    @model_validator(mode="after")
    def _consistent(self) -> "SynthSpec":
        if self.interactions < 3 * self.users:
            raise ValueError(f"{self.interactions} interactions cannot give {self.users} users 3 each")
        if self.topics is not None and self.topics * 2 > self.items:
            raise ValueError(f"{self.topics} topics need at least {2 * self.topics} items")
        return self

    @property
    def n_topics(self) -> int:
        if self.topics is not None:
            return self.topics
        return int(min(400, max(5, round(np.sqrt(self.items) / 3)), self.items // 2))

    @classmethod
    def sized(cls, size: str | None = None, **fields) -> "SynthSpec":
        """A named size (XS/S/M/L), with any field given (not None) on top; without a size, ``items``,
        ``interactions`` and ``users`` must all be given. Invalid values are a :class:`ConfigError`."""
        given = {k: v for k, v in fields.items() if v is not None}
        if size is not None:
            key = size.upper()
            if key not in SIZES:
                raise ConfigError(f"unknown size {size!r}; choose one of {', '.join(SIZES)} or give --items, "
                                  "--interactions and --users")
            given = {**dict(zip(("items", "interactions", "users"), SIZES[key])), **given}
        elif not {"items", "interactions", "users"} <= set(given):
            raise ConfigError("give a --size, or all of --items, --interactions and --users")
        try:
            return cls(**given)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'spec'}: {e['msg']}" for e in exc.errors())
            raise ConfigError(f"invalid synthetic dataset: {problems}") from None


class Catalogue:
    """The generated items as arrays (int32/float32): topic, popularity weight, cold flag, successors, and the
    per-topic cumulative weights that sample an item of a topic by popularity in one ``searchsorted``."""

    def __init__(self, spec: SynthSpec, rng: np.random.Generator):
        n, n_topics = spec.items, spec.n_topics
        # every topic gets >= 2 items; the rest are spread uniformly
        topic = np.concatenate([np.repeat(np.arange(n_topics), 2), rng.integers(0, n_topics, n - 2 * n_topics)])
        self.topic = rng.permutation(topic).astype(np.int32)
        rank = rng.permutation(n).astype(np.float64) + 1.0
        weight = rank ** -spec.zipf_items
        cold = rng.random(n) < spec.cold_share
        order = np.lexsort((-weight, self.topic))  # by topic, most popular first
        starts = np.searchsorted(self.topic[order], np.arange(n_topics))
        cold[order[starts]] = False  # each topic keeps its most popular item warm, so every topic can be sampled
        self.cold = cold
        self.weight = np.where(cold, 0.0, weight).astype(np.float32)
        self.order = order.astype(np.int32)
        self.cum = np.cumsum(self.weight[order].astype(np.float64))
        self.start = starts.astype(np.int64)
        self.end = np.append(starts[1:], n).astype(np.int64)
        self.topic_weight = (rng.permutation(n_topics) + 1.0) ** -spec.zipf_topics
        self.topic_weight /= self.topic_weight.sum()
        same = rng.random((n, spec.successors)) < spec.p_successor_same_topic
        succ_topic = np.where(same, self.topic[:, None], (self.topic[:, None] + 1) % n_topics)
        self.succ = self.sample(succ_topic.ravel(), rng).reshape(n, spec.successors)

    def sample(self, topics: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One item per entry of ``topics``, drawn by popularity within that topic (cold items never)."""
        start, end = self.start[topics], self.end[topics]
        lo = np.where(start > 0, self.cum[np.maximum(start - 1, 0)], 0.0)
        hi = self.cum[end - 1]
        at = np.searchsorted(self.cum, lo + rng.random(len(topics)) * (hi - lo), side="right")
        return self.order[np.clip(at, start, end - 1)]


class Vocabulary:
    """Pseudo-words (consonant-vowel syllables) grouped by topic: a topic name, title words and attribute
    values per topic, plus shared words every topic uses (noise a text model must see past)."""

    def __init__(self, n_topics: int, rng: np.random.Generator, title_words: int = 24, attributes: int = 6,
                 shared: int = 40):
        syllables = np.array([c + v for c in _CONSONANTS for v in _VOWELS])
        need = n_topics * (1 + title_words + attributes) + shared
        words: list[str] = []
        seen: set[str] = set()
        while len(words) < need:
            for parts in rng.choice(syllables, size=(need, 3)):
                word = "".join(parts)
                if word not in seen:
                    seen.add(word)
                    words.append(word.capitalize())
        words = words[:need]
        self.shared = np.array(words[:shared])
        per_topic = np.array(words[shared:]).reshape(n_topics, 1 + title_words + attributes)
        self.names = per_topic[:, 0]
        self.title_words = per_topic[:, 1 : 1 + title_words]
        self.attributes = per_topic[:, 1 + title_words :]


def _item_rows(spec: SynthSpec, cat: Catalogue, vocab: Vocabulary, seed: int) -> Iterator[list[dict]]:
    """Item dicts (``item_id``, ``title``, ``genres``, ``year``) in chunks of :data:`ITEM_CHUNK`."""
    n_words = vocab.title_words.shape[1]
    word_p = (np.arange(n_words) + 1.0) ** -0.8
    word_p /= word_p.sum()
    topic_year = 1960 + (np.arange(spec.n_topics) * 7919) % 60  # each topic has an era
    for chunk_no, first in enumerate(range(0, spec.items, ITEM_CHUNK)):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 2, chunk_no]))
        ids = np.arange(first, min(first + ITEM_CHUNK, spec.items))
        topic = cat.topic[ids]
        picks = rng.choice(n_words, size=(len(ids), 3), p=word_p)
        words = vocab.title_words[topic[:, None], picks]
        filler = vocab.shared[rng.integers(0, len(vocab.shared), len(ids))]
        attribute = vocab.attributes[topic, rng.integers(0, vocab.attributes.shape[1], len(ids))]
        year = topic_year[topic] + rng.integers(0, 8, len(ids))
        volume = rng.integers(1, 100, len(ids))
        yield [{"item_id": f"i{i}", "title": f"{w[0]} {w[1]} {f} {w[2]} {v}", "genres": [str(vocab.names[t]), str(a)],
                "year": int(y)}
               for i, w, f, t, a, y, v in zip(ids.tolist(), words.tolist(), filler.tolist(), topic.tolist(),
                                              attribute.tolist(), year.tolist(), volume.tolist())]


def _lengths(spec: SynthSpec, rng: np.random.Generator) -> np.ndarray:
    """History length per user: 3 each, the rest spread by log-normal activity; sums to ``spec.interactions``."""
    activity = rng.lognormal(0.0, spec.activity_sigma, spec.users)
    extra = rng.multinomial(spec.interactions - 3 * spec.users, activity / activity.sum())
    return (3 + extra).astype(np.int64)


def _user_histories(spec: SynthSpec, cat: Catalogue, lengths: np.ndarray, first: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(user, item, timestamp)`` rows of users ``first .. first+len(lengths)``, each user's rows in time
    order. Steps are simulated for all users at once: users sorted by length so the active ones are a prefix."""
    n = len(lengths)
    k = spec.topics_per_user
    liked = rng.choice(spec.n_topics, size=(n, k), p=cat.topic_weight).astype(np.int32)
    w_start, w_end = rng.dirichlet(np.ones(k), n), rng.dirichlet(np.ones(k), n)  # preferences drift start -> end
    by_length = np.argsort(-lengths, kind="stable")
    lens = lengths[by_length]
    liked, w_start, w_end = liked[by_length], w_start[by_length], w_end[by_length]
    steps = np.full((int(lens[0]), n), -1, dtype=np.int32)
    current = np.zeros(n, dtype=np.int32)
    last = np.full(n, -1, dtype=np.int32)
    for t in range(int(lens[0])):
        m = int(np.searchsorted(-lens, -t, side="left"))  # users with length > t
        frac = (t / np.maximum(lens[:m] - 1, 1))[:, None]
        w = (1 - frac) * w_start[:m] + frac * w_end[:m]
        redraw = (rng.random(m) < spec.p_switch) | (t == 0)
        pick = (rng.random(m)[:, None] > np.cumsum(w, axis=1) / w.sum(axis=1, keepdims=True)).sum(axis=1)
        current[:m] = np.where(redraw, liked[np.arange(m), np.minimum(pick, k - 1)], current[:m])
        item = cat.sample(current[:m], rng)
        follow = (rng.random(m) < spec.p_markov) & (last[:m] >= 0)
        if follow.any():
            rows = np.flatnonzero(follow)
            item[rows] = cat.succ[last[rows], rng.integers(0, spec.successors, len(rows))]
        repeat = item == last[:m]
        if repeat.any():  # no immediate repeats: one redraw from the topic
            item[repeat] = cat.sample(current[:m][repeat], rng)
        steps[t, :m] = item
        last[:m] = item
    start = rng.integers(0, 3 * 365 * 86_400, n)
    gaps = rng.exponential(86_400.0, size=steps.shape).astype(np.int64) + 1
    stamps = 1_500_000_000 + start[None, :] + np.cumsum(gaps, axis=0)
    back = np.empty(n, dtype=np.int64)
    back[by_length] = np.arange(n)  # write users in id order
    valid = steps[:, back].T >= 0
    users = np.broadcast_to((first + np.arange(n))[:, None], valid.shape)[valid]
    return users.astype(np.int32), steps[:, back].T[valid], stamps[:, back].T[valid]


def _ids(prefix: str, numbers: np.ndarray) -> pa.Array:
    return pc.binary_join_element_wise(pa.scalar(prefix), pc.cast(pa.array(numbers), pa.string()), "")


class _Writer:
    """Appends record batches to ``interactions.csv`` or ``interactions.parquet`` (streamed, one file)."""

    def __init__(self, folder: Path, fmt: str, schema: pa.Schema):
        if fmt == "parquet":
            self.sink = pq.ParquetWriter(folder / "interactions.parquet", schema)
        else:
            self.sink = pacsv.CSVWriter(folder / "interactions.csv", schema,
                                        write_options=pacsv.WriteOptions(quoting_style="none"))

    def write(self, table: pa.Table) -> None:
        self.sink.write_table(table)

    def close(self) -> None:
        self.sink.close()


def generate(spec: SynthSpec, folder: str | Path, fmt: Literal["csv", "parquet"] = "csv",
             on_progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Write the dataset into ``folder`` (atomically; refuses a folder recgen did not write) and return the
    summary also saved as ``synth.json`` (spec, counts, measured structure)."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    folder = Path(folder)
    check_output_folder(folder, "synthetic dataset folder")
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 0]))
    cat = Catalogue(spec, rng)
    vocab = Vocabulary(spec.n_topics, rng)
    counts = np.zeros(spec.items, dtype=np.int64)
    same_topic = 0
    report = on_progress or (lambda stage, done, total: None)
    with atomic_dir(folder, manifest=True, what="synthetic dataset (recgen synth)") as tmp:
        with (tmp / "items.jsonl").open("w", encoding="utf-8") as handle:
            for rows in _item_rows(spec, cat, vocab, spec.seed):
                handle.write("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
                report("items", len(rows), spec.items)
        lengths = _lengths(spec, np.random.default_rng(np.random.SeedSequence([spec.seed, 3])))
        schema = pa.schema([("user", pa.string()), ("item", pa.string()), ("timestamp", pa.int64())])
        writer = _Writer(tmp, fmt, schema)
        try:
            for chunk_no, first in enumerate(range(0, spec.users, USER_CHUNK)):
                chunk_rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 1, chunk_no]))
                users, items, stamps = _user_histories(spec, cat, lengths[first : first + USER_CHUNK], first,
                                                       chunk_rng)
                counts += np.bincount(items, minlength=spec.items)
                same_user = users[1:] == users[:-1]
                same_topic += int((cat.topic[items[1:]] == cat.topic[items[:-1]])[same_user].sum())
                writer.write(pa.table([_ids("u", users), _ids("i", items), pa.array(stamps)], schema=schema))
                report("users", min(USER_CHUNK, spec.users - first), spec.users)
        finally:
            writer.close()
        info = {"generator": "recgen synth", "format": fmt, "spec": spec.model_dump(),
                "topics": spec.n_topics, **structure(counts, cat.cold, same_topic, spec)}
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    return info


def structure(counts: np.ndarray, cold: np.ndarray, same_topic: int, spec: SynthSpec) -> dict:
    """What was generated, measured on the written rows: cold share, popularity power law, topic coherence."""
    warm = np.sort(counts[counts > 0])[::-1].astype(np.float64)
    top = warm[: max(10, len(warm) // 2)]  # the head, where a power law is fitted
    slope = float(np.polyfit(np.log(np.arange(1, len(top) + 1)), np.log(top), 1)[0]) if len(top) > 2 else 0.0
    pairs = spec.interactions - spec.users
    return {
        "items_with_interactions": int((counts > 0).sum()),
        "cold_items": int((counts == 0).sum()),
        "cold_share": round(float((counts == 0).mean()), 4),
        "cold_by_design": int(cold.sum()),
        "popularity_loglog_slope": round(slope, 3),
        "top1pct_interaction_share": round(float(warm[: max(1, len(counts) // 100)].sum() / counts.sum()), 4),
        "same_topic_transition_share": round(same_topic / max(pairs, 1), 4),
    }
