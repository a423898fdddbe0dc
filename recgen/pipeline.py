"""The one factory that wires the stages: a config + fitted state → retriever, ranker and reasoner.

Every caller that needs the pipeline (the :class:`~recgen.recommender.Recommender` API, the CLI, the server,
batch jobs, evaluation systems, training-time validation, calibration and benchmarks) builds it here, so a
setting means the same thing everywhere. Stages take their settings group in the constructor; nothing sets
attributes on a stage after it is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .config import RecgenConfig, RetrievalSettings
from .data.catalog import Catalog
from .data.dataset import Dataset
from .lm.factory import make_backend
from .ranking.ranker import Ranker
from .ranking.reasoner import Reasoner
from .retrieval import Retriever
from .retrieval.cache import load_or_build_index
from .retrieval.collaborative import ItemTransitions


@dataclass(frozen=True)
class FittedState:
    """What is learned from users' sequences: the popularity fallback and the item transitions."""

    popularity: list[str] = field(default_factory=list)
    transitions: ItemTransitions | None = None

    @classmethod
    def fit(cls, dataset: Dataset, settings: RetrievalSettings) -> "FittedState":
        """Fit on ``dataset``'s sequences (a training-only copy when evaluating); transitions only when used."""
        transitions = None
        if settings.collaborative_weight > 0:
            transitions = ItemTransitions.fit(dataset.catalog, list(dataset.sequences.values()))
        return cls(dataset.popularity(), transitions)


def build_retriever(catalog: Catalog, settings: RetrievalSettings, *, transitions: ItemTransitions | None = None,
                    index_dir: str | Path | None = None, retriever: Retriever | None = None,
                    show_progress: bool = False) -> Retriever:
    """The first stage: an existing index (``retriever``), a cached one (``index_dir``), or a fresh one."""
    if retriever is not None:
        return retriever.rebound(settings, transitions)
    if index_dir is not None:
        return load_or_build_index(catalog, settings, index_dir, show_progress, transitions=transitions)
    return Retriever.build(catalog, settings, show_progress=show_progress, transitions=transitions)


class Pipeline:
    """Retriever → ranker → reasoner over one catalog, with the LM backend loaded on first use."""

    def __init__(self, catalog: Catalog, config: RecgenConfig, retriever: Retriever, state: FittedState,
                 backend=None):
        self.catalog = catalog
        self.config = config
        self.retriever = retriever
        self.state = state
        self._backend = backend
        self._ranker: Ranker | None = None
        self._reasoner: Reasoner | None = None

    @property
    def backend(self):
        """The LM backend, loaded on first use (retrieval-only callers never pay for it)."""
        if self._backend is None:
            self._backend = make_backend(self.config.lm)
        return self._backend

    @property
    def ranker(self) -> Ranker:
        if self._ranker is None:
            self._ranker = Ranker(self.catalog, self.backend, self.config.prompt, self.config.ranking)
        return self._ranker

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

