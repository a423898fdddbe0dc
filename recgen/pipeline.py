"""The one factory that wires the stages: a config + fitted state → retriever, second stage, ranker and reasoner.

Every caller that needs the pipeline (the :class:`~recgen.recommender.Recommender` API, the CLI, the server,
batch jobs, evaluation systems, training-time validation, calibration and benchmarks) builds it here, so a
setting means the same thing everywhere. Stages take their settings group in the constructor; nothing sets
attributes on a stage after it is built.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .config import PromptSettings, RankingSettings, RecgenConfig, RetrievalSettings
from .data.catalog import Catalog
from .data.dataset import Dataset
from .errors import DataError
from .lm.factory import make_backend
from .lm.identity import LMIdentity, check_available, local_name
from .paths import cache_dir
from .ranking.fusion import (
    FusionRanker,
    FusionStage,
    RequestStage,
    Sources,
    SourceStats,
    feature_names,
    request_feature_names,
)
from .ranking.fusion.item_features import groups_in, item_features
from .ranking.fusion.lm_stage import LMFusionStage, LMRerank
from .ranking.ranker import Ranker
from .reasons.reasoner import Reasoner
from .retrieval import Retriever
from .retrieval.cache import load_or_build_index
from .retrieval.collaborative import ItemTransitions
from .retrieval.embed_chunks import EMBED_CHUNK
from .retrieval.embedder import Encoder

log = logging.getLogger(__name__)

_RANKER, _SASREC, _FUSION_JSON = "ranker.txt", "sasrec.safetensors", "fusion.json"
_REQUEST_RANKER = "ranker-request.txt"
_LM_STAGE, _LM_STAGE_JSON = "lm-stage.txt", "lm-stage.json"
#: Retrieval settings that change the second stage's features (a fitted folder is keyed by them).
FITTED_RETRIEVAL_KEYS = ("embedder", "history", "recency_decay", "collaborative_weight")
#: Ones keyed later, all through the request stage's candidates (the request-first order of a request with a
#: history: its pool, its mix of history and request, cold items' borrowed scores). They join the key only when
#: not at their default, so a folder fitted with the defaults before they were keyed keeps its key.
#: ``request_prior`` is not one: it weighs requests WITHOUT a history, which no fitted stage sees.
LATER_FITTED_RETRIEVAL_KEYS = ("query_weight", "request_pool", "cold_neighbours")


@dataclass(frozen=True)
class LMStageState:
    """A served LM stage (``recgen fit --lm-stage``, kept only when validation gave the LM weight): the fitted
    re-ordering (:class:`LMRerank`), the LM it was fitted with (checked at load) and the prompt settings its
    scores were computed with (the stage's prompts are built with these, whatever the served config says)."""

    rerank: LMRerank
    lm: LMIdentity
    prompt: PromptSettings

    def describe(self) -> str:
        return f"LM stage ({self.rerank.design}, {self.lm.describe()})"


@dataclass(frozen=True)
class FittedState:
    """What is learned from users' sequences: the popularity fallback and the item transitions and, once
    ``recgen fit`` ran, the second stage's parts: co-occurrence neighbours and popularity counts
    (``sources``), the SASRec model when it was fitted, the fusion ranker and the pool depth it was chosen with,
    and the request ranker (a request in words with a history) when one was fitted and beat the request-first order.

    ``fallback`` says why a fused order cannot be served from this state (None when it can, or when no
    second stage was ever fitted); the pipeline logs it once."""

    popularity: list[str] = field(default_factory=list)
    transitions: ItemTransitions | None = None
    sources: SourceStats | None = None
    sasrec: object | None = None  # recgen.models.sasrec.SASRec
    ranker: FusionRanker | None = None
    depth: int = 0
    fit_info: dict = field(default_factory=dict)
    fallback: str | None = None
    request_ranker: FusionRanker | None = None
    lm_stage: LMStageState | None = None

    @classmethod
    def fit(cls, dataset: Dataset, settings: RetrievalSettings) -> "FittedState":
        """Fit on ``dataset``'s sequences (a training-only copy when evaluating); transitions only when used."""
        transitions = None
        if settings.collaborative_weight > 0:
            transitions = ItemTransitions.fit(dataset.catalog, list(dataset.sequences.values()))
        return cls(dataset.popularity(), transitions)

    def with_second_stage(self, sources: SourceStats, ranker: FusionRanker | None, depth: int, sasrec=None,
                          fit_info: dict | None = None, fallback: str | None = None,
                          request_ranker: FusionRanker | None = None,
                          lm_stage: LMStageState | None = None) -> "FittedState":
        return dataclasses.replace(self, sources=sources, ranker=ranker, depth=int(depth), sasrec=sasrec,
                                   fit_info=dict(fit_info or {}), fallback=fallback,
                                   request_ranker=request_ranker if ranker is not None else None,
                                   lm_stage=lm_stage if ranker is not None else None)

    # -- the second stage on disk: <folder>/{neighbours.npz, popularity.npz, sources.json, ranker.txt,
    #    ranker-request.txt, sasrec.safetensors + sasrec.json, lm-stage.txt + lm-stage.json, fusion.json} (arrays,
    #    LightGBM text, safetensors, JSON)
    def save_second_stage(self, folder: str | Path) -> None:
        if self.sources is None:
            return
        folder = Path(folder)
        self.sources.save(folder)
        if self.ranker is not None:
            self.ranker.save(folder / _RANKER)
        if self.request_ranker is not None:
            self.request_ranker.save(folder / _REQUEST_RANKER)
        if self.sasrec is not None:
            save_sasrec(self.sasrec, folder / _SASREC)
        if self.lm_stage is not None:
            self.lm_stage.rerank.model.save(folder / _LM_STAGE)
            (folder / _LM_STAGE_JSON).write_text(json.dumps({
                "design": self.lm_stage.rerank.design, "lm": self.lm_stage.lm.as_json(),
                "prompt": self.lm_stage.prompt.model_dump()}, indent=2))
        meta = {"depth": self.depth, "sasrec": self.sasrec is not None, "ranker": self.ranker is not None,
                "features": self.ranker.feature_names if self.ranker is not None else None,
                "request_ranker": self.request_ranker is not None, "lm_stage": self.lm_stage is not None,
                "fallback": self.fallback, "fit": self.fit_info}
        (folder / _FUSION_JSON).write_text(json.dumps(meta, indent=2, default=str))

    def load_second_stage(self, folder: str | Path, catalog: Catalog) -> "FittedState":
        """This state plus the second stage saved in ``folder`` (unchanged when there is none).

        A missing or unreadable SASRec file: the other sources are kept and the fused order falls back to the
        hybrid retrieval order (one warning, from the pipeline). A corrupt ranker, or one fitted with features
        this setup does not provide (LM features belong to the LM stage's own file), is refused with a
        :class:`ModelLoadError` naming the file and the missing features. A saved LM stage whose LM is not on
        this machine (or has other weights) is refused with a :class:`ModelLoadError` naming the LM."""
        folder = Path(folder)
        if not (folder / _FUSION_JSON).is_file():
            return self
        try:
            meta = json.loads((folder / _FUSION_JSON).read_text(encoding="utf-8"))
            depth, wants_sasrec, has_ranker = int(meta["depth"]), bool(meta["sasrec"]), bool(meta["ranker"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{folder / _FUSION_JSON} is not a readable second-stage description "
                            f"({type(exc).__name__}: {exc})") from None
        sources = SourceStats.load(folder, len(catalog))
        sasrec, fallback = None, meta.get("fallback")
        if wants_sasrec:
            sasrec, problem = load_sasrec(folder / _SASREC, len(catalog))
            if problem:
                fallback = (f"the SASRec source is not available ({problem}); the ranker was fitted with it, so the "
                            "hybrid retrieval order over the other sources is served — refit with `recgen fit`")
        ranker = request_ranker = lm_stage = None
        if has_ranker and not (wants_sasrec and sasrec is None):
            groups = groups_in(meta.get("features") or [])  # item-representation groups the fit chose
            ranker = FusionRanker.load(folder / _RANKER, feature_names(sasrec is not None, False, groups))
            if meta.get("request_ranker"):
                request_ranker = FusionRanker.load(folder / _REQUEST_RANKER, request_feature_names(sasrec is not None))
            if meta.get("lm_stage"):
                lm_stage = _load_lm_stage(folder, sasrec is not None)
        return self.with_second_stage(sources, ranker, depth, sasrec, meta.get("fit") or {}, fallback, request_ranker,
                                      lm_stage)


def _load_lm_stage(folder: Path, sasrec: bool) -> LMStageState:
    """The saved LM stage, after checking that its LM is here (refused, naming it, when not)."""
    path = folder / _LM_STAGE_JSON
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        design, lm, prompt = str(meta["design"]), LMIdentity.from_json(meta["lm"]), PromptSettings(**meta["prompt"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{path} is not a readable LM stage description ({type(exc).__name__}: {exc})") from None
    check_available(lm, f"the LM stage saved in {folder}")
    return LMStageState(LMRerank.load(folder / _LM_STAGE, design, sasrec), lm, prompt)


def save_sasrec(model, path: Path) -> None:
    """SASRec through its own safetensors checkpoint format (torch is imported only when a model is saved)."""
    from .models.sasrec import save_checkpoint  # torch: only callers that have a SASRec model pay for it

    save_checkpoint(model, path)


def load_sasrec(path: Path, n_items: int) -> tuple[object | None, str | None]:
    """(model, None), or (None, what is wrong): an optional source never stops serving."""
    if not path.is_file() or not path.with_suffix(".json").is_file():
        return None, f"{path} or its .json is missing"
    from .models.sasrec import load_checkpoint  # torch: only when a SASRec source was fitted

    try:
        model, _ = load_checkpoint(path)
    except Exception as exc:  # safetensors, JSON, shape errors: any of them means "not usable"
        return None, f"{path} is unreadable ({type(exc).__name__}: {str(exc)[:200]})"
    if model.n_items != n_items:
        return None, f"{path} was fitted for {model.n_items} items; the catalog has {n_items}"
    return model, None


def data_fingerprint(dataset: Dataset) -> str:
    """A digest of the catalog and every user's sequence: a fitted folder is reused only for the same data."""
    digest = hashlib.sha256(dataset.catalog.fingerprint().encode())
    for user in sorted(dataset.sequences):
        digest.update(user.encode())
        digest.update(b"\0" + "\t".join(dataset.sequences[user]).encode() + b"\n")
    return digest.hexdigest()


def fitted_key(dataset: Dataset, settings: RetrievalSettings) -> str:
    """The data and the retrieval settings a fitted folder is valid for: another value of any of them refits."""
    values, defaults = settings.model_dump(), RetrievalSettings().model_dump()
    wanted = {k: values[k] for k in FITTED_RETRIEVAL_KEYS}
    wanted |= {k: values[k] for k in LATER_FITTED_RETRIEVAL_KEYS if values[k] != defaults[k]}
    return hashlib.sha256(json.dumps({"data": data_fingerprint(dataset), "retrieval": wanted},
                                     sort_keys=True).encode()).hexdigest()[:12]


def fitted_folder(dataset: Dataset, settings: RetrievalSettings) -> Path:
    """Where ``recgen fit`` saves a dataset's fitted recommender, and where ``open_dataset`` looks for it."""
    return cache_dir() / "fitted" / f"{dataset.name}-{fitted_key(dataset, settings)}"


def build_retriever(catalog: Catalog, settings: RetrievalSettings, *, transitions: ItemTransitions | None = None,
                    index_dir: str | Path | None = None, retriever: Retriever | None = None,
                    show_progress: bool = False, encode: Encoder | None = None,
                    chunk: int = EMBED_CHUNK) -> Retriever:
    """The first stage: an existing index (``retriever``), a cached one (``index_dir``), or a fresh one (embedded
    here, or by ``encode``: a cluster's workers; ``chunk`` titles at a time, checkpointed beside ``index_dir``)."""
    if retriever is not None:
        return retriever.rebound(settings, transitions)
    if index_dir is not None:
        return load_or_build_index(catalog, settings, index_dir, show_progress, transitions=transitions, encode=encode,
                                   chunk=chunk)
    return Retriever.build(catalog, settings, show_progress=show_progress, transitions=transitions, encode=encode,
                           chunk=chunk)


class Pipeline:
    """Retriever → second stage → reasoner over one catalog, with the LM backend loaded on first use.

    What it serves changes only through :meth:`serve` (the feedback loop's new statistics) and
    :meth:`grown` (a new pipeline for a grown catalog). Readers need no lock: each attribute is replaced whole."""

    def __init__(self, catalog: Catalog, config: RecgenConfig, retriever: Retriever, state: FittedState,
                 backend=None):
        self.catalog = catalog
        self.config = config
        self.retriever = retriever
        self.state = state
        self._backend = backend
        self._ranker: Ranker | None = None
        self._reasoner: Reasoner | None = None
        self._sources: Sources | None = None
        self._fusion: FusionStage | None = None
        self._request_fusion: RequestStage | None = None
        self._lm_stage_backend = None
        if config.ranking.second_stage == "fusion" and state.ranker is None:
            log.warning("no fused second stage: %s", state.fallback or (
                "no ranker has been fitted for this data (run `recgen fit -d <dataset>`); the hybrid retrieval "
                "order is served"))

    def serve(self, state: FittedState) -> None:
        """Serve ``state`` from now on: the retriever is rebound to its transitions (same index) and the stages
        built on the old state (fused stage, reasoner) are rebuilt on first use, the fused stage over the same
        fitted signals when only the transitions and popularity changed (the feedback loop, once per event).
        Requests in flight finish on the objects they hold."""
        retriever = self.retriever.rebound(self.retriever.settings, state.transitions)
        sources = self._sources
        if sources is not None and state.sources is self.state.sources and state.sasrec is self.state.sasrec:
            sources = sources.rebound(retriever)  # the same fitted signals: not recomputed per event
        else:
            sources = None
        self.retriever, self.state, self._sources = retriever, state, sources
        self._fusion = self._request_fusion = self._reasoner = None

    def grown(self, retriever: Retriever, state: FittedState) -> "Pipeline":
        """A pipeline over ``retriever``'s catalog (items were added) with this config and this LM backend,
        whether it is loaded yet or not (it is not loaded for this)."""
        return build_pipeline(retriever.catalog, self.config, state=state, retriever=retriever, backend=self._backend)

    @property
    def backend(self):
        """The LM backend, loaded on first use (retrieval-only callers never pay for it)."""
        if self._backend is None:
            self._backend = make_backend(self.config.lm)
        return self._backend

    @property
    def lm_stage_backend(self):
        """The backend the LM stage scores with: the pipeline's own when it is the stage's LM (same model and
        adapter), else one for the stage's LM with this config's engine settings (loaded on first use)."""
        stage = self.state.lm_stage
        if stage is None:
            return None
        lm = self.config.lm
        if (local_name(lm.model), local_name(lm.adapter)) == (stage.lm.model, stage.lm.adapter):
            return self.backend
        if self._lm_stage_backend is None:
            self._lm_stage_backend = make_backend(lm.model_copy(update={"model": stage.lm.model,
                                                                        "adapter": stage.lm.adapter, "adapters": {}}))
        return self._lm_stage_backend

    def close(self) -> None:
        """Stop the LM backends' engines if any were loaded (vLLM runs them in child processes)."""
        for backend in (self._backend, self._lm_stage_backend):
            close = getattr(backend, "close", None)
            if close is not None:
                close()

    def describe_second_stage(self) -> str:
        """What orders a history's candidates in this pipeline, for logs (startup, batch jobs)."""
        if self.config.ranking.second_stage == "lm":
            return "the LM ranker (ranking.second_stage = lm)"
        if self.fusion is not None:
            parts = [f"pool depth {self.state.depth}"] + (["SASRec source"] if self.state.sasrec is not None else [])
            parts += ["request stage"] if self.state.request_ranker is not None else []
            parts += [self.state.lm_stage.describe()] if self.state.lm_stage is not None else []
            return f"the fused LightGBM ranker ({', '.join(parts)})"
        why = self.state.fallback or "no fitted ranker: run `recgen fit`"
        return f"the hybrid retrieval order ({why})"

    @property
    def ranker(self) -> Ranker:
        if self._ranker is None:
            self._ranker = Ranker(self.catalog, self.backend, self.config.prompt, self.config.ranking)
        return self._ranker

    @property
    def fusion(self) -> FusionStage | None:
        """The fused order (``ranking.second_stage = "fusion"`` and a fitted ranker), else None: the caller
        serves the hybrid retrieval order."""
        if self.config.ranking.second_stage != "fusion" or self.state.ranker is None:
            return None
        if self._fusion is None:
            if self._sources is None:
                self._sources = Sources(self.catalog, self.retriever, stats=self.state.sources, sasrec=self.state.sasrec)
            items = item_features(self.catalog, self._sources.emb, groups_in(self.state.ranker.feature_names),
                                  self.config.lm)  # the LM's item vectors: per-item cache, new items computed
            cold_pin = int((self.state.fit_info.get("cold_pin") or {}).get("chosen", 0))  # chosen by the fit
            stage = self.state.lm_stage
            if stage is None:
                self._fusion = FusionStage(self._sources, self.state.ranker, self.state.depth, items, cold_pin)
            else:
                scorer = Ranker(self.catalog, self.lm_stage_backend, stage.prompt, RankingSettings())
                self._fusion = LMFusionStage(self._sources, self.state.ranker, self.state.depth, stage.rerank, scorer,
                                             items=items, cold_pin=cold_pin)
        return self._fusion

    @property
    def request_fusion(self) -> RequestStage | None:
        """The request stage (a request in words with a history) when :attr:`fusion` is served and a request
        ranker was fitted, else None: the caller serves the retriever's request-first order."""
        fusion = self.fusion
        if fusion is None or self.state.request_ranker is None:
            return None
        if self._request_fusion is None:
            self._request_fusion = RequestStage(fusion.sources, self.state.request_ranker)
        return self._request_fusion

    @property
    def reasoner(self) -> Reasoner:
        if self._reasoner is None:
            self._reasoner = Reasoner(self.catalog, self.backend, self.config.prompt, self.retriever.item_embeddings,
                                      self.state.transitions)
        return self._reasoner


def build_pipeline(catalog: Catalog, config: RecgenConfig, *, state: FittedState | None = None,
                   retriever: Retriever | None = None, index_dir: str | Path | None = None, backend=None,
                   show_progress: bool = False) -> Pipeline:
    """The pipeline a config asks for. ``backend`` (an :class:`~recgen.lm.backend.LMBackend`) replaces the one
    ``config.lm`` would load, e.g. a model being trained."""
    state = state or FittedState()
    retriever = build_retriever(catalog, config.retrieval, transitions=state.transitions, index_dir=index_dir,
                                retriever=retriever, show_progress=show_progress)
    return Pipeline(catalog, config, retriever, state, backend)


def history_rows(catalog: Catalog, history: list[str]) -> np.ndarray:
    """Item ids → catalog rows (the second stage works on rows)."""
    return np.fromiter((catalog.index_of(i) for i in history), dtype=np.int64, count=len(history))
