"""The public Python API: build from a catalog, save/load, and recommend for a history and/or a request."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import ValidationError

from .atomic import atomic_dir
from .config import MAX_CANDIDATES, RecgenConfig, format_validation_error
from .data import load_catalog_file, load_dataset
from .data.catalog import Catalog, Item
from .data.dataset import Dataset
from .data.files import read_text
from .errors import DataError, InvalidRequestError, RecgenError, UnknownItemError
from .lm.adapters import check_adapter_name, use_adapter
from .pipeline import FittedState, build_pipeline
from .ranking.ranker import Mode, Ranker, RankRequest
from .retrieval import Retriever
from .retrieval.cache import index_folder
from .retrieval.collaborative import ItemTransitions
from .retrieval.growth import items_from_rows
from .retrieval.retriever import Candidates
from .types import Recommendation, RecommendRequest

log = logging.getLogger(__name__)

_CONFIG, _CATALOG, _POPULARITY, _INDEX = "config.json", "catalog.jsonl", "popularity.json", "index"
_TRANSITIONS = "transitions.npz"


class Recommender:
    """Retrieval → LM ranking → reasons, over one catalog (wired by :func:`recgen.pipeline.build_pipeline`).

    >>> rec = Recommender.from_dataset(load_dataset("ml-100k"))          # doctest: +SKIP
    >>> rec.recommend(history=["50", "172"], k=5)                           # doctest: +SKIP
    """

    def __init__(self, catalog: Catalog, config: RecgenConfig | None = None, *, retriever: Retriever | None = None,
                 state: FittedState | None = None, index_dir: str | Path | None = None, backend=None,
                 show_progress: bool = False):
        config = config or RecgenConfig()
        self.pipeline = build_pipeline(catalog, config, state=state, retriever=retriever, index_dir=index_dir,
                                       backend=backend, show_progress=show_progress)
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
        """Write config, catalog, popularity, transitions and index into ``folder`` (replaced atomically)."""
        with atomic_dir(folder) as tmp:
            (tmp / _CONFIG).write_text(self.config.model_dump_json(indent=2))
            (tmp / _CATALOG).write_text(self.catalog.to_jsonl(), encoding="utf-8")
            (tmp / _POPULARITY).write_text(json.dumps(self.popularity))
            self.retriever.save(tmp / _INDEX)
            if self.retriever.transitions is not None:
                self.retriever.transitions.save(tmp / _TRANSITIONS)

    @classmethod
    def load(cls, folder: str | Path, config: RecgenConfig | None = None, **kwargs) -> "Recommender":
        """Load a saved recommender; ``config`` overrides the saved one (e.g. another LM or adapter)."""
        folder = Path(folder)
        for name in (_CONFIG, _CATALOG):
            if not (folder / name).is_file():
                raise DataError(f"{folder} is not a saved recommender (missing {name})")
        saved = RecgenConfig.validated(_read_json(folder / _CONFIG), str(folder / _CONFIG))
        config = config or saved
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
        return cls(catalog, config, retriever=retriever, state=FittedState(popularity, transitions), **kwargs)

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

    @property
    def ranker(self) -> Ranker:
        return self.pipeline.ranker

    def add_items(self, items: list[Item | dict], update: bool = False) -> int:
        """Add items to the live catalog and index without a rebuild (see :meth:`Retriever.add_items`); they
        are recommendable at once. An id already in the catalog is refused unless ``update``. Returns the new
        catalog size; :meth:`save` writes the grown catalog and index (with its new fingerprint)."""
        retriever = self.retriever.add_items(items_from_rows(items), update=update)
        state = FittedState(self.popularity, retriever.transitions)
        self.pipeline = build_pipeline(retriever.catalog, self.config, state=state, retriever=retriever,
                                       backend=self.pipeline._backend)
        return len(retriever.catalog)

    # -- recommending -------------------------------------------------------------------------
    def recommend(self, history: list[str] | None = None, query: str | None = None, k: int = 10,
                  mode: Mode = "score", reasons: bool = True, exclude: list[str] | None = None) -> list[Recommendation]:
        """Up to ``k`` items, best first: never in ``history``/``exclude``, each once, each a catalog item.

        An empty history with no query falls back to the most popular items (when the recommender was
        built from a dataset). ``k`` above the candidate count enlarges the candidate set, up to 26.
        """
        return self.recommend_batch([{"history": history, "query": query, "k": k, "mode": mode, "reasons": reasons,
                                      "exclude": exclude}])[0]

    def recommend_batch(self, requests: list[RecommendRequest | dict], *,
                        return_exceptions: bool = False) -> list[list[Recommendation] | Exception]:
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
        ranked: dict[int, list[tuple[str, float]]] = {}
        for mode in ("score", "generate"):
            todo = [n for n, (request, job) in enumerate(jobs) if isinstance(job, RankRequest) and request.mode == mode]
            for adapter in dict.fromkeys(jobs[n][0].adapter for n in todo):  # one LM call per named adapter
                group = [n for n in todo if jobs[n][0].adapter == adapter]
                with use_adapter(adapter):
                    for n, order in zip(group, self.ranker.rank([jobs[n][1] for n in group], mode=mode)):
                        ranked[n] = order
        results: list = []
        for n, (request, job) in enumerate(jobs):
            if isinstance(job, Exception):
                results.append(job)
            elif isinstance(job, list):  # popularity fallback
                results.append(self._finish(request, [], job, popular=True))
            else:
                results.append(self._finish(request, job.history, ranked[n][: request.k], labels=labels.get(n)))
        return results

    def _prepare(self, request: RecommendRequest, labels: dict | None = None,
                 slot: int = 0) -> RankRequest | list[tuple[str, float]]:
        """Validate a request and retrieve its candidates (or the popularity list for an empty request);
        candidates shown although they miss the request's filters go to ``labels[slot]``."""
        if request.user is not None:
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
        if query is None:  # only a request can miss its own filters
            candidates = self.retriever.retrieve(history, None, n=n, exclude=exclude)
        else:
            found = self.retriever.candidates(history, query, n=n, exclude=exclude)
            if found.warning is not None and labels is not None:
                labels[slot] = found
            candidates = found.items
        return RankRequest(history=history, query=query, candidates=[c for c, _ in candidates], k=request.k)

    def _finish(self, request: RecommendRequest, history: list[str], order: list[tuple[str, float]],
                popular: bool = False, labels: Candidates | None = None) -> list[Recommendation]:
        reasons: list[tuple[str, str]] | list[None] = [None] * len(order)
        if request.reasons and order:
            if popular:
                reasons = [("One of the most popular items in the catalog.", "fallback")] * len(order)
            else:
                with use_adapter(request.adapter):
                    reasons = self.explain(history, request.query, [i for i, _ in order])
        return [
            Recommendation(item_id=item_id, title=self.catalog.get(item_id).title, rank=rank + 1, score=score,
                           reason=reason[0] if reason else None, reason_source=reason[1] if reason else None,
                           warning=labels.warning if labels is not None and (
                               item_id in labels.unmatched or not labels.unmatched) else None)
            for rank, ((item_id, score), reason) in enumerate(zip(order, reasons))
        ]

    def explain(self, history: list[str], query: str | None, item_ids: list[str]) -> list[tuple[str, str]]:
        """(reason, source) per item: the LM's sentence if it passes the fact check, else a fallback."""
        return self.pipeline.reasoner.explain(history, query, item_ids)


def _validated_request(raw) -> RecommendRequest:
    """A request from a dict, with bad fields as one :class:`InvalidRequestError` listing them all."""
    if not isinstance(raw, dict):
        raise InvalidRequestError(f"a request must be a mapping of fields, not {type(raw).__name__}")
    try:
        return RecommendRequest.model_validate(raw)
    except ValidationError as exc:
        raise InvalidRequestError("bad request: " + format_validation_error(exc)) from None


def _read_json(path: Path):
    try:
        return json.loads(read_text(path))
    except ValueError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None



def open_dataset(dataset_name: str, config: RecgenConfig | None = None, index_dir: str | Path | None = None,
                 show_progress: bool = False) -> tuple[Dataset, "Recommender"]:
    """Load a dataset by name or path and build its Recommender, reusing the cached index when it matches.

    What every entry point that serves a dataset (CLI, server, batch jobs, benchmarks) calls."""
    config = config or RecgenConfig()
    dataset = load_dataset(dataset_name)
    folder = index_dir or index_folder(dataset.name, dataset.catalog.fingerprint(), config.retrieval.embedder)
    return dataset, Recommender.from_dataset(dataset, config, index_dir=folder, show_progress=show_progress)
