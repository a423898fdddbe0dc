"""SASRec baseline for the harness: :class:`recgen.fit.sasrec.SASRecFitter`'s model, scoring all items.

The fit (settings chosen on validation, checkpoints and selection cached under ``cache_dir()/sasrec``) is the
fit layer's; this adaptor keeps the harness's system contract (``fit``, ``score``, ``params``).
"""

from __future__ import annotations

import numpy as np

from ...fit.sasrec import SASRecFit, SASRecFitter
from ..protocol import EvalData


class SASRecBaseline:
    """``-s sasrec``: the parameters are :class:`SASRecFitter`'s (overrides of SASRecConfig, ``grid``, ...)."""

    name = "sasrec"

    def __init__(self, **params) -> None:
        self.fitter = SASRecFitter(**params)
        self.fitted: SASRecFit | None = None

    @property
    def config(self):
        return self.fitted.config if self.fitted else None

    @property
    def model(self):
        return self.fitted.model if self.fitted else None

    @property
    def fit_info(self) -> dict:
        return self.fitted.info if self.fitted else {}

    def params(self) -> dict:
        return self.fitter.params(self.config)

    def fit(self, data: EvalData, log=None, progress=None) -> None:
        self.fitted = self.fitter.fit(data, log=log, progress=progress)

    def _config(self, data: EvalData):
        """The fitted config, or before a fit (a killed one) the only candidate when the grid is pinned."""
        if self.config is not None:
            return self.config
        candidates = self.fitter.candidates(data)
        if len(candidates) != 1:
            raise RuntimeError("call fit() first: the config is chosen on validation")
        return candidates[0]

    def checkpoint_path(self, data: EvalData):
        return self.fitter.checkpoint_path(data, self._config(data))

    def state_path(self, data: EvalData):
        return self.fitter.state_path(data, self._config(data))

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        return self.model.score_histories(histories)
