"""The public Python API: build from a catalog, save/load, and recommend for a history and/or a request."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from .atomic import atomic_dir
from .config import MAX_CANDIDATES, RecgenConfig, format_validation_error
from .data import load_catalog_file, load_dataset
from .data.catalog import Catalog, Item
from .data.dataset import Dataset
from .data.files import read_text
from .errors import DataError, InvalidRequestError, RecgenError, UnknownItemError
from .feedback import Feedback, no_feedback_error
from .lm.adapters import check_adapter_name
from .pipeline import FittedState, build_pipeline, fitted_folder, history_rows
from .ranking.fusion import REQUEST_DEPTH
from .ranking.fusion.request_stage import from_candidates
from .ranking.ranker import Mode, Ranker, RankRequest
from .reasons.asked import unused_words
from .retrieval import Retriever
from .retrieval.cache import index_folder
from .retrieval.cold_items import ColdNeighbours
from .retrieval.collaborative import ItemTransitions
from .retrieval.growth import items_from_rows
from .retrieval.retriever import Candidates
from .types import RankedBy, Recommendation, Recommendations, RecommendRequest

log = logging.getLogger(__name__)

_CONFIG, _CATALOG, _POPULARITY, _INDEX = "config.json", "catalog.jsonl", "popularity.json", "index"
_TRANSITIONS, _COLD, _SECOND_STAGE = "transitions.npz", "cold_neighbours.npz", "fusion"


class Recommender:
    """Retrieval → second stage → reasons, over one catalog (wired by :func:`recgen.pipeline.build_pipeline`).

    The second stage is ``config.ranking.second_stage``: ``fusion`` (the learned ranker over the merged pool,
    fitted by ``recgen fit``; the hybrid retrieval order when none is fitted) or ``lm`` (the LM reorders the
    retrieved candidates). Either way the LM writes the reasons; in generate mode it picks from the top
    ``n_candidates`` of the second stage's order.

    >>> rec = Recommender.from_dataset(load_dataset("ml-100k"))          # doctest: +SKIP
    >>> rec.recommend(history=["50", "172"], k=5)                           # doctest: +SKIP
    """

    def __init__(self, catalog: Catalog, config: RecgenConfig | None = None, *, retriever: Retriever | None = None,
                 state: FittedState | None = None, index_dir: str | Path | None = None, backend=None,
                 show_progress: bool = False):
        config = config or RecgenConfig()
        self.pipeline = build_pipeline(catalog, config, state=state, retriever=retriever, index_dir=index_dir,
                                       backend=backend, show_progress=show_progress)
        #: The event log and live user data (:meth:`use_feedback`); ``None`` = no feedback loop.
        self.feedback: Feedback | None = None
        for name, (trained, configured) in config.adapter_mismatches().items():
            log.warning("adapter %s was trained with %s=%r but this recommender uses %r; rankings will be "
                        "worse than the adapter's reported metrics", config.lm.adapter, name, trained, configured)

    # -- construction and persistence ---------------------------------------------------------
    @classmethod
    def from_dataset(cls, dataset: Dataset, config: RecgenConfig | None = None, *,
                     index_dir: str | Path | None = None, show_progress: bool = False, **kwargs) -> "Recommender":
        """A recommender over ``dataset.catalog``: its sequences give the popularity fallback and the
        item-to-item transitions that retrieval mixes with text similarity.

        ``index_dir`` caches the retrieval index: reused when it matches the catalog and embedder,
        rebuilt (and overwritten) when it is stale or corrupt."""
        config = config or RecgenConfig()
        return cls(dataset.catalog, config, state=FittedState.fit(dataset, config.retrieval), index_dir=index_dir,
                   show_progress=show_progress, **kwargs)

    def save(self, folder: str | Path) -> None:
        """Write config, catalog, popularity, transitions (with the cold items' neighbours), index and the fitted
        second stage (``fusion/``: neighbours, popularity counts, LightGBM ranker text, SASRec safetensors) into
        ``folder``, atomically."""
        with atomic_dir(folder, what="saved recommender") as tmp:
            (tmp / _CONFIG).write_text(self.config.model_dump_json(indent=2))
            (tmp / _CATALOG).write_text(self.catalog.to_jsonl(), encoding="utf-8")
            (tmp / _POPULARITY).write_text(json.dumps(self.popularity))
            self.retriever.save(tmp / _INDEX)
            if self.retriever.transitions is not None:
                self.retriever.transitions.save(tmp / _TRANSITIONS)
                if self.retriever.borrows_for_cold_items:  # minutes of search at 1M items: done once, here
                    self.retriever.cold_neighbours(self.retriever.transitions).save(tmp / _COLD)
            self.pipeline.state.save_second_stage(tmp / _SECOND_STAGE)

    @classmethod
    def load(cls, folder: str | Path, config: RecgenConfig | None = None, *, catalog: Catalog | None = None,
             **kwargs) -> "Recommender":
        """Load a saved recommender; ``config`` overrides the saved one (e.g. another LM or adapter). ``catalog``
        (the dataset's own, in :func:`open_dataset`) is used instead of parsing ``catalog.jsonl`` again when that
        file holds exactly it: at 1M items the parse took ~20 s of an 80 s open."""
        folder = Path(folder)
        for name in (_CONFIG, _CATALOG):
            if not (folder / name).is_file():
                raise DataError(f"{folder} is not a saved recommender (missing {name})")
        saved = RecgenConfig.validated(_read_json(folder / _CONFIG), str(folder / _CONFIG))
        config = config or saved
        if catalog is None or not _holds(folder / _CATALOG, catalog):
            catalog = load_catalog_file(folder / _CATALOG)
        popularity = _read_json(folder / _POPULARITY) if (folder / _POPULARITY).is_file() else []
        if not isinstance(popularity, list) or not all(isinstance(i, str) for i in popularity):
            raise DataError(f"{folder / _POPULARITY} must be a JSON list of item ids")
        _, unknown = catalog.known(popularity)
        if unknown:
            raise DataError(f"{folder / _POPULARITY} names item id(s) not in the catalog: "
                            f"{', '.join(map(repr, unknown[:10]))}")
        settings = config.retrieval if config.retrieval.embedder != saved.retrieval.embedder else saved.retrieval
        retriever = Retriever.load(folder / _INDEX, catalog, settings)
        transitions = None
        if (folder / _TRANSITIONS).is_file():
            transitions = ItemTransitions.load(folder / _TRANSITIONS, n_items=len(catalog))
        state = FittedState(popularity, transitions).load_second_stage(folder / _SECOND_STAGE, catalog)
        recommender = cls(catalog, config, retriever=retriever, state=state, **kwargs)
        if transitions is not None and (folder / _COLD).is_file():
            try:
                recommender.retriever.adopt_cold_neighbours(transitions, ColdNeighbours.load(folder / _COLD))
            except (ValueError, OSError) as exc:
                raise DataError(f"{folder / _COLD} is not the cold items' neighbours of this folder ({exc}); "
                                "refit with `recgen fit`") from None
        return recommender

    # -- components ---------------------------------------------------------------------------
    @property
    def catalog(self) -> Catalog:
        return self.pipeline.catalog

    @property
    def config(self) -> RecgenConfig:
        return self.pipeline.config

    @property
    def retriever(self) -> Retriever:
        return self.pipeline.retriever

    @property
    def popularity(self) -> list[str]:
        return self.pipeline.state.popularity

    @property
    def backend(self):
        return self.pipeline.backend

    def close(self) -> None:
        """Stop the LM engine's processes, if any were started (``recgen serve`` calls it on the way out)."""
        self.pipeline.close()

    @property
    def ranker(self) -> Ranker:
        return self.pipeline.ranker

    @property
    def fusion(self):
        """The fused second stage (:class:`~recgen.ranking.fusion.FusionStage`), or None (hybrid order served)."""
        return self.pipeline.fusion

    def add_items(self, items: list[Item | dict], update: bool = False) -> int:
        """Add items to the live catalog and index without a rebuild (see :meth:`Retriever.add_items`); they
        are recommendable at once. An id already in the catalog is refused unless ``update``. Returns the new
        catalog size; :meth:`save` writes the grown catalog and index (with its new fingerprint).

        With a fitted second stage, the hybrid retrieval order (which includes the new items) is served until
        the next ``recgen refit``: the fused ranker's sources are sized for the catalog they were fitted on. They
        are dropped even when no ranker was fitted (a fit that fell back to the hybrid order): saved beside the
        grown catalog they would make the folder unloadable."""
        retriever = self.retriever.add_items(items_from_rows(items), update=update)
        state = self.pipeline.state
        if state.sources is not None:
            state = state.with_second_stage(None, None, 0, fallback=(
                "items were added to the live catalog; the hybrid retrieval order (new items included) is served "
                "until the second stage is refitted (`recgen refit`)"))
        self.pipeline = self.pipeline.grown(retriever, dataclasses.replace(state, transitions=retriever.transitions))
        if self.feedback is not None:
            self.feedback.attach(self.pipeline)
        return len(retriever.catalog)

    # -- recommending -------------------------------------------------------------------------
    def recommend(self, history: list[str] | None = None, query: str | None = None, k: int = 10,
                  mode: Mode = "score", reasons: bool = True, exclude: list[str] | None = None,
                  user: str | None = None, adapter: str | None = None) -> Recommendations:
        """Up to ``k`` items, best first: never in ``history``/``exclude``, each once, each a catalog item; the
        list's ``unused_words`` are the request's words nothing used (no filter read them, no item shown holds
        them: :func:`recgen.reasons.asked.unused_words`).
        ``user`` (with a feedback loop, :meth:`use_feedback`) prepends the user's served history and excludes
        the items they rejected. ``adapter``: a named LoRA adapter of the LM (``lm.adapters``) for the ranking
        and the reasons (None = the default).

        An empty history with no query falls back to the most popular items (when the recommender was
        built from a dataset). ``k`` above the candidate count enlarges the candidate set, up to 26.
        """
        return self.recommend_batch([{"history": history, "query": query, "k": k, "mode": mode, "reasons": reasons,
                                      "exclude": exclude, "user": user, "adapter": adapter}])[0]

    def recommend_batch(self, requests: list[RecommendRequest | dict], *,
                        return_exceptions: bool = False) -> list[Recommendations | Exception]:
        """Recommendations for many requests; LM ranking is batched across requests of the same mode.

        With ``return_exceptions=True`` a bad request yields its :class:`RecgenError` in its place and the
        others are still served (what batch jobs and servers want); otherwise the first error is raised.
        """
        jobs: list = []
        labels: dict[int, Candidates] = {}  # per request: candidates that do not satisfy its filters
        for raw in requests:
            try:
                request = raw if isinstance(raw, RecommendRequest) else _validated_request(raw)
                jobs.append((request, self._prepare(request, labels, len(jobs))))
            except RecgenError as exc:
                if not return_exceptions:
                    raise
                jobs.append((None, exc))
        ranked, by, jobs = self._second_stage(jobs)
        for mode in ("score", "generate"):
            todo = [n for n, (request, job) in enumerate(jobs)
                    if isinstance(job, RankRequest) and request.mode == mode and n not in ranked]
            for adapter in dict.fromkeys(jobs[n][0].adapter for n in todo):  # one LM call per named adapter
                group = [n for n in todo if jobs[n][0].adapter == adapter]
                for n, order in zip(group, self.ranker.rank([jobs[n][1] for n in group], mode=mode, adapter=adapter)):
                    ranked[n], by[n] = order, "lm"
        results: list = []
        for n, (request, job) in enumerate(jobs):
            if isinstance(job, Exception):
                results.append(job)
            elif isinstance(job, list):  # popularity fallback
                results.append(self._finish(request, [], job, popular=True, ranker="popularity"))
            else:
                results.append(self._finish(request, job.history, ranked[n][: request.k], labels=labels.get(n),
                                            ranker=by[n]))
        return results

    def _second_stage(self, jobs: list) -> tuple[dict[int, list[tuple[str, float]]], dict[int, RankedBy], list]:
        """The orders that need no LM and what ordered each, by job number, and the jobs for the LM: a new list
        (``jobs`` is left as it was) in which generate-mode jobs get the fused top of the pool as their
        candidates (the LM then picks from it).

        With ``second_stage = "fusion"``: a history without a request is ordered by the fused ranker (one
        booster call for the batch); a request with a history by the request ranker (fitted on groups that
        carry a request; items meeting the request first), when ``recgen fit`` fitted one that beat the
        request-first order on held-out users; score mode serves these orders. Otherwise a request keeps the
        retriever's request-first order, and without a fitted ranker score mode serves the hybrid retrieval
        order. With ``second_stage = "lm"`` every job goes to the LM."""
        out: dict[int, list[tuple[str, float]]] = {}
        by: dict[int, RankedBy] = {}
        if self.config.ranking.second_stage != "fusion":
            return out, by, list(jobs)
        jobs = list(jobs)
        fusion = self.pipeline.fusion
        fused = [n for n, (request, job) in enumerate(jobs)
                 if isinstance(job, RankRequest) and fusion is not None and job.query is None and job.history]
        if fused:
            catalog = self.catalog
            n_candidates = self.config.retrieval.n_candidates
            orders = fusion.order([history_rows(catalog, jobs[n][1].history) for n in fused], MAX_CANDIDATES,
                                  exclude=[{catalog.index_of(i) for i in jobs[n][0].exclude or ()} for n in fused])
            for n, order in zip(fused, orders):
                request, job = jobs[n]
                pairs = [(catalog.items[row].item_id, score) for row, score in order]
                if request.mode == "generate":
                    pairs = pairs[: max(n_candidates, request.k)]
                    jobs[n] = (request, RankRequest(history=job.history, query=None, candidates=[i for i, _ in pairs],
                                                    k=request.k))
                else:
                    out[n], by[n] = pairs, "fusion"
        asked = [n for n, (request, job) in enumerate(jobs) if isinstance(job, _Job) and job.found is not None]
        if asked:
            orders = self.pipeline.request_fusion.order(
                [history_rows(self.catalog, jobs[n][1].history) for n in asked],
                [from_candidates(self.retriever, jobs[n][1].found) for n in asked])
            for n, order in zip(asked, orders):
                request, job = jobs[n]
                pairs = [(self.catalog.items[row].item_id, score) for row, score in order]
                if request.mode == "generate":
                    keep = max(self.config.retrieval.n_candidates, request.k)
                    jobs[n] = (request, RankRequest(history=job.history, query=job.query,
                                                    candidates=[i for i, _ in pairs[:keep]], k=request.k))
                else:
                    out[n], by[n] = pairs, "request_stage"
        for n, (request, job) in enumerate(jobs):
            if isinstance(job, RankRequest) and request.mode == "score" and n not in out:
                out[n], by[n] = list(job.retrieved), "retrieval"
        return out, by, jobs

    def _prepare(self, request: RecommendRequest, labels: dict | None = None,
                 slot: int = 0) -> RankRequest | list[tuple[str, float]]:
        """Validate a request and retrieve its candidates (or the popularity list for an empty request);
        candidates shown although they miss the request's filters go to ``labels[slot]``."""
        if request.user is not None and self.feedback is None:
            raise InvalidRequestError("`user` needs a dataset; resolve it to a history first (see recgen.cli)")
        if request.adapter is not None:
            check_adapter_name(self.backend, request.adapter)
        if request.k > MAX_CANDIDATES:
            raise InvalidRequestError(f"k={request.k} is more than the {MAX_CANDIDATES} candidates the ranker can label")
        query = (request.query or "").strip() or None
        if query is not None and len(query) > self.config.max_query_chars:
            raise InvalidRequestError(
                f"the query is {len(query)} characters; the limit is {self.config.max_query_chars} (config max_query_chars)"
            )
        history = [str(i) for i in request.history or []]
        if request.user is not None:  # the served user data: base + events, minus what they rejected
            history = list(self.feedback.history(request.user)) + history
            request = request.model_copy(update={"exclude": [*(request.exclude or []), *self.rejected(request.user)]})
        known, unknown = self.catalog.known(history)
        if unknown:
            raise UnknownItemError(f"history has item id(s) not in the catalog: {', '.join(map(repr, unknown[:10]))}")
        _, unknown_excluded = self.catalog.known(request.exclude or [])
        if unknown_excluded:
            raise UnknownItemError(f"exclude has item id(s) not in the catalog: {', '.join(map(repr, unknown_excluded[:10]))}")
        exclude = set(request.exclude or ())
        if not history and query is None:
            if not self.popularity:
                raise InvalidRequestError("give a history or a query (this recommender has no popularity fallback)")
            seen = exclude
            top = [i for i in self.popularity if i not in seen][: request.k]
            return [(i, 1.0 / (rank + 1)) for rank, i in enumerate(top)]
        n = max(self.config.retrieval.n_candidates, request.k)
        if query is None and self.pipeline.fusion is not None:  # the fused stage retrieves its own pool
            return RankRequest(history=history, query=None, candidates=[], k=request.k)
        if query is None:  # only a request can miss its own filters
            candidates = self.retriever.retrieve(history, None, n=n, exclude=exclude)
        else:  # the request stage re-orders a deeper list; its first n are the request-first order's
            fused = self.pipeline.request_fusion is not None and bool(history)
            found = self.retriever.candidates(history, query, n=max(n, REQUEST_DEPTH) if fused else n, exclude=exclude)
            if found.warning is not None and labels is not None:
                labels[slot] = found
            if fused:
                return _Job(history=history, query=query, candidates=[c for c, _ in found.items[:n]], k=request.k,
                            retrieved=found.items[:n], found=found)
            candidates = found.items
        return _Job(history=history, query=query, candidates=[c for c, _ in candidates], k=request.k,
                    retrieved=candidates)

    def _finish(self, request: RecommendRequest, history: list[str], order: list[tuple[str, float]],
                popular: bool = False, labels: Candidates | None = None,
                ranker: RankedBy | None = None) -> Recommendations:
        reasons: list[tuple[str, str]] | list[None] = [None] * len(order)
        if request.reasons and order:
            if popular:
                reasons = [("One of the most popular items in the catalog.", "fallback")] * len(order)
            else:
                reasons = self.explain(history, request.query, [i for i, _ in order], adapter=request.adapter)
        return Recommendations([
            Recommendation(item_id=item_id, title=self.catalog.get(item_id).title, rank=rank + 1, score=score,
                           ranker=ranker, reason=reason[0] if reason else None, reason_source=reason[1] if reason else None,
                           warning=labels.warning if labels is not None and (
                               item_id in labels.unmatched or not labels.unmatched) else None)
            for rank, ((item_id, score), reason) in enumerate(zip(order, reasons))
        ], unused_words=self.unused_words(request.query, [item_id for item_id, _ in order]))

    def unused_words(self, query: str | None, item_ids: list[str]) -> tuple[str, ...]:
        """The words of ``query`` that no filter read and none of ``item_ids`` (the items shown) holds."""
        query = (query or "").strip() or None
        if query is None:
            return ()
        try:
            constraints = self.retriever.request_reader.read(query)
        except RecgenError:
            return ()  # contradictory: refused before anything was retrieved
        return unused_words(query, constraints, [self.catalog.get(i) for i in item_ids])

    # -- feedback (recgen.feedback) ----------------------------------------------------------------
    def use_feedback(self, dataset: Dataset | Feedback, path: str | Path | None = None, *,
                     create: bool = True) -> Feedback:
        """Attach an event log (default: the dataset's, under ``RECGEN_STATE_DIR``): ``dataset`` becomes the
        served user data (base − forgotten users + positive events) and the statistics follow it. Given a
        :class:`Dataset`, this recommender must have been fitted on it (``from_dataset``) and the log is applied
        as a change to that fit; given a :meth:`Feedback.open` log, it must have been fitted on the served data
        (what ``open_dataset`` does). With ``create=False`` a missing log is created only by the first write."""
        if isinstance(dataset, Feedback):
            self.feedback = dataset.attach(self.pipeline)
        else:
            self.feedback = Feedback(self.pipeline, dataset, path, create=create)
        return self.feedback

    def record(self, user: str, item: str, event: str, event_id: str | None = None, ts: float | None = None,
               value: float | None = None):
        """Record what ``user`` did with ``item`` (click, purchase, rating with ``value``, reject): durable
        before this returns, reflected in the user's next recommendation. Returns (event, new?)."""
        if self.feedback is None:
            raise no_feedback_error()
        return self.feedback.record(user, item, event, value=value, event_id=event_id, ts=ts)

    def forget(self, user: str) -> dict:
        """Remove ``user``'s events and base interactions from the log and the statistics."""
        if self.feedback is None:
            raise no_feedback_error()
        return self.feedback.forget(user)

    def rejected(self, user: str | None) -> list[str]:
        """Items ``user`` rejected (never recommended to them again); empty without a feedback loop."""
        return self.feedback.rejected_items(user) if self.feedback is not None else []

    def explain(self, history: list[str], query: str | None, item_ids: list[str],
                adapter: str | None = None) -> list[tuple[str, str]]:
        """(reason, source) per item: the LM's sentence if it passes the fact check, else a fallback."""
        return self.pipeline.reasoner.explain(history, query, item_ids, adapter=adapter)


@dataclass
class _Job(RankRequest):
    """A ranking job with the retriever's (item_id, score) order, which score mode serves when the second
    stage is ``fusion`` but the fused order does not apply (a request, or no fitted ranker)."""

    retrieved: list[tuple[str, float]] = field(default_factory=list)
    #: a request's candidates (deeper than ``retrieved``) when the request stage will order them
    found: Candidates | None = None


def _validated_request(raw) -> RecommendRequest:
    """A request from a dict, with bad fields as one :class:`InvalidRequestError` listing them all."""
    if not isinstance(raw, dict):
        raise InvalidRequestError(f"a request must be a mapping of fields, not {type(raw).__name__}")
    try:
        return RecommendRequest.model_validate(raw)
    except ValidationError as exc:
        raise InvalidRequestError("bad request: " + format_validation_error(exc)) from None


def _holds(path: Path, catalog: Catalog) -> bool:
    """Whether ``path`` is byte for byte what :meth:`Catalog.to_jsonl` writes for ``catalog`` (what
    :meth:`Recommender.save` wrote for it), so that parsing the file again would give ``catalog``."""
    try:
        return path.read_bytes() == catalog.to_jsonl().encode("utf-8")
    except OSError:
        return False


def _read_json(path: Path):
    try:
        return json.loads(read_text(path))
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None



def open_dataset(dataset_name: str, config: RecgenConfig | None = None, index_dir: str | Path | None = None,
                 show_progress: bool = False, fitted: str | Path | None = None) -> tuple[Dataset, "Recommender"]:
    """Load a dataset by name or path and its Recommender: the folder ``recgen fit`` saved for this exact data
    and these retrieval settings (``fitted``, default: the cache) when there is one, loaded without refitting
    anything; otherwise the transitions and popularity are fitted now (the index is still reused from its
    cache) and, with ``second_stage = "fusion"``, the hybrid order is served with one warning that says how
    to fit the second stage.

    What every entry point that serves a dataset (CLI, server, batch jobs, benchmarks) calls."""
    config = config or RecgenConfig()
    dataset = load_dataset(dataset_name, config.data.bad_rows)
    feedback = Feedback.open(dataset)  # the dataset's event log, if any: events and forgotten users, before the fit
    folder = Path(fitted) if fitted is not None else fitted_folder(dataset, config.retrieval)
    if (folder / _CONFIG).is_file():
        rec = Recommender.load(folder, config, catalog=dataset.catalog)  # config overrides the saved one
    else:
        if fitted is not None:
            raise DataError(f"{folder} is not a fitted recommender folder (missing {_CONFIG}); write one with "
                            f"`recgen fit -d {dataset_name} -o {folder}`")
        state = FittedState.fit(dataset, config.retrieval)
        if config.ranking.second_stage == "fusion":
            others = sorted(p.name for p in folder.parent.glob(f"{dataset.name}-*") if p.is_dir())
            why = (f"the fitted folder(s) {', '.join(others)} under {folder.parent} were fitted on another version "
                   f"of this data or with other retrieval settings (stale)" if others else "it has not been fitted")
            state = FittedState(state.popularity, state.transitions, fallback=(
                f"{why}; the hybrid retrieval order is served. Fit it once with `recgen fit -d {dataset_name}`"))
        index = index_dir or index_folder(dataset.name, dataset.catalog.fingerprint(), config.retrieval.embedder)
        rec = Recommender(dataset.catalog, config, state=state, index_dir=index, show_progress=show_progress)
    rec.use_feedback(feedback)
    return dataset, rec
