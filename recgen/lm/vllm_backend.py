"""vLLM backends (GPU): in-process ``vllm.LLM`` and a client for a running ``vllm serve`` server.

vLLM is an optional extra (``pip install 'recgen[vllm]'``): its PyPI wheel is CUDA-only and pins its
own torch, so it never enters the default (CPU) install or CI. It is imported lazily; everything
that builds requests or reads responses is a pure function over plain dicts, tested without vLLM.

How each :class:`~recgen.lm.backend.LMBackend` operation maps onto vLLM:

* **score** — one generated token, greedy, ``allowed_token_ids`` = the label tokens and
  ``logprobs`` = the number of labels. vLLM computes logprobs *before* the allowed-token mask unless
  the engine runs with ``logprobs_mode="processed_logprobs"`` (set here; for a server pass
  ``--logprobs-mode processed_logprobs``), so that the top-N returned are exactly the labels
  (renormalised over them, which keeps their order). ``exact_label_logprobs=True`` also asks for
  ``SamplingParams.logprob_token_ids`` (newer vLLM; see :func:`supports_label_logprobs`), the labels'
  own log-probabilities; it is off by default. A label absent from the returned list scores
  :data:`MISSING_LOGPROB`.
* **generate** — structured outputs with a JSON schema ``{"items": [label, ...]}`` of exactly ``k``
  enum labels. JSON-schema enums do not enforce uniqueness, so the list is de-duplicated and
  validated afterwards, and a short list is filled from the score-mode order.
* **text** (reasons) — greedy, ``max_tokens``, ``stop=["\\n"]``.

With a LoRA adapter, every request carries one ``LoRARequest(name, id, path)``; vLLM rejects adapters
with ``modules_to_save`` (full ``lm_head``/``embed_tokens``) and ranks above ``max_lora_rank``.
"""

from __future__ import annotations

import json
import math
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..config import MAX_CANDIDATES, LMSettings
from ..errors import ModelLoadError
from .backend import ChatTokenizing
from .checks import LOAD_ERRORS, check_adapter_folder, check_model_folder
from .prompt import ChatPrompt
from .resolve import resolve_lm

VLLM_MISSING = (
    "vLLM is not installed: pip install 'recgen[vllm]' (needs a CUDA GPU; it pins torch 2.14 and its own "
    "transformers range, so install it in a separate environment from recgen's CPU default)"
)
#: Score of a label that vLLM did not return among the top log-probabilities (finite, so JSON-safe).
MISSING_LOGPROB = -1.0e4
#: LoRA ranks vLLM accepts for ``max_lora_rank``.
LORA_RANKS = (8, 16, 32, 64, 128, 256, 512)
ADAPTER_NAME = "recgen-adapter"


# -- pure request building (no vLLM needed) ----------------------------------------------------
def label_json_schema(labels: list[str], k: int) -> dict:
    """``{"items": [k labels]}``; enum does not make them distinct (checked afterwards)."""
    return {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"type": "string", "enum": list(labels)},
                                 "minItems": k, "maxItems": k}},
        "required": ["items"],
        "additionalProperties": False,
    }


def generate_max_tokens(k: int) -> int:
    """Room for ``{"items": ["A", "B", ...]}`` with whitespace: ~5 tokens a label plus the frame."""
    return 16 + 6 * k


def build_sampling_params(kind: str, *, label_ids: list[int] | None = None, labels: list[str] | None = None,
                          k: int | None = None, max_tokens: int | None = None,
                          exact_label_logprobs: bool = False) -> dict:
    """The keyword arguments of ``vllm.SamplingParams`` for one request, as a plain dict.

    ``structured_outputs`` is given as a dict of ``StructuredOutputsParams`` fields;
    :func:`to_vllm_sampling_params` turns the whole thing into vLLM's classes."""
    if kind == "score":
        if not label_ids:
            raise ValueError("score mode needs label_ids")
        params = {"max_tokens": 1, "temperature": 0.0, "logprobs": len(label_ids),
                  "allowed_token_ids": list(label_ids)}
        if exact_label_logprobs:
            params["logprob_token_ids"] = list(label_ids)
        return params
    if kind == "generate":
        if not labels or not k:
            raise ValueError("generate mode needs labels and k")
        k = min(k, len(labels))
        return {"max_tokens": generate_max_tokens(k), "temperature": 0.0,
                "structured_outputs": {"json": label_json_schema(labels, k)}}
    if kind == "text":
        if not max_tokens:
            raise ValueError("text mode needs max_tokens")
        return {"max_tokens": max_tokens, "temperature": 0.0, "stop": ["\n"]}
    raise ValueError(f"kind must be score, generate or text, not {kind!r}")


def build_llm_kwargs(model: str, *, adapter: str | None = None, trust_remote_code: bool = False,
                     dtype: str = "auto", seed: int = 0, **extra) -> dict:
    """Arguments of ``vllm.LLM``: prefix caching on (prompts share the instruction), processed
    logprobs (see the module doc), room for every label's logprob, LoRA only with an adapter."""
    kwargs = {"model": model, "enable_prefix_caching": True, "logprobs_mode": "processed_logprobs",
              "max_logprobs": MAX_CANDIDATES, "trust_remote_code": trust_remote_code, "dtype": dtype, "seed": seed}
    if adapter:
        kwargs.update(enable_lora=True, max_loras=1, max_lora_rank=lora_rank_limit(adapter_rank(adapter)))
    kwargs.update(extra)
    return kwargs


def engine_kwargs(settings: LMSettings, **llm_options) -> dict:
    """``vllm.LLM`` arguments for settings, after checking the model and adapter files (no vLLM needed)."""
    model = resolve_lm(settings.model)
    check_model_folder(model)
    return build_llm_kwargs(model, adapter=settings.adapter, trust_remote_code=settings.trust_remote_code,
                            **llm_options)


def adapter_rank(adapter: str | Path) -> int:
    """The ``r`` of a peft adapter folder; refuses what vLLM cannot load (modules_to_save)."""
    config = check_adapter_folder(adapter)
    if config.get("modules_to_save"):
        raise ModelLoadError(
            f"adapter {adapter} saves whole modules ({', '.join(config['modules_to_save'])}); vLLM rejects "
            "LoRA adapters with modules_to_save: retrain without it, or merge it (merge_and_unload) and pass --lm"
        )
    try:
        return int(config.get("r", 8))
    except (TypeError, ValueError):
        raise ModelLoadError(f"{Path(adapter) / 'adapter_config.json'}: r must be a whole number, not "
                             f"{config.get('r')!r}; retrain the adapter or fix the file") from None


def lora_rank_limit(rank: int) -> int:
    for allowed in LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ModelLoadError(f"LoRA rank {rank} is above vLLM's largest max_lora_rank ({LORA_RANKS[-1]})")


def build_chat_request(prompt: ChatPrompt, model: str, kind: str, *, labels: list[str] | None = None,
                       k: int | None = None, max_tokens: int | None = None) -> dict:
    """A ``/v1/chat/completions`` body for ``vllm serve`` (the JSON sent on the wire).

    vLLM-only fields (``structured_outputs``, ``continue_final_message``, ``add_generation_prompt``)
    sit at the top level, where the openai client puts ``extra_body`` (:func:`split_extra_body`).
    ``model`` is the served LoRA name (``--lora-modules name=path``) or the base model."""
    messages = [dict(m) for m in prompt.messages]
    body: dict = {"model": model, "messages": messages, "temperature": 0.0}
    if prompt.response_prefix:
        # The assistant's turn starts with the prefix: continue that message instead of opening a new one.
        messages.append({"role": "assistant", "content": prompt.response_prefix})
        body.update(add_generation_prompt=False, continue_final_message=True)
    if kind == "score":
        if not labels:
            raise ValueError("score mode needs labels")
        body.update(max_tokens=1, logprobs=True, top_logprobs=len(labels),
                    structured_outputs={"choice": list(labels)})
    elif kind == "generate":
        if not labels or not k:
            raise ValueError("generate mode needs labels and k")
        k = min(k, len(labels))
        body.update(max_tokens=generate_max_tokens(k), structured_outputs={"json": label_json_schema(labels, k)})
    elif kind == "text":
        if not max_tokens:
            raise ValueError("text mode needs max_tokens")
        body.update(max_tokens=max_tokens, stop=["\n"])
    else:
        raise ValueError(f"kind must be score, generate or text, not {kind!r}")
    return body


_OPENAI_FIELDS = {"model", "messages", "temperature", "max_tokens", "max_completion_tokens", "logprobs",
                  "top_logprobs", "stop", "seed", "n", "top_p", "response_format"}


def split_extra_body(body: dict) -> tuple[dict, dict]:
    """(keyword arguments, ``extra_body``) for ``openai.OpenAI().chat.completions.create``."""
    standard = {k: v for k, v in body.items() if k in _OPENAI_FIELDS}
    extra = {k: v for k, v in body.items() if k not in _OPENAI_FIELDS}
    return standard, extra


# -- pure response parsing --------------------------------------------------------------------
def _value(entry) -> float:
    """A logprob given as a float, a vLLM ``Logprob`` object, or an OpenAI ``{"logprob": ...}`` dict."""
    if isinstance(entry, dict):
        entry = entry.get("logprob")
    else:
        entry = getattr(entry, "logprob", entry)
    value = float(entry)
    return value if math.isfinite(value) else MISSING_LOGPROB


def scores_from_token_logprobs(top: dict, label_ids: list[int]) -> list[float]:
    """Per label token id, its logprob in vLLM's ``{token_id: Logprob}`` map (missing → MISSING_LOGPROB)."""
    return [_value(top[i]) if i in top else MISSING_LOGPROB for i in label_ids]


def parse_score_response(response: dict, labels: list[str]) -> list[float]:
    """Label scores from a chat completion with ``logprobs``: ``choices[0].logprobs.content[0].top_logprobs``
    (tokens are matched to labels after stripping whitespace; the best of duplicates is kept)."""
    try:
        first = response["choices"][0]["logprobs"]["content"][0]
    except (KeyError, IndexError, TypeError):
        raise ModelLoadError("the vLLM server's answer has no logprobs (is it an OpenAI-compatible chat "
                             "completion with logprobs=true?)") from None
    found: dict[str, float] = {}
    for entry in [first, *first.get("top_logprobs", [])]:
        token = str(entry.get("token", "")).strip()
        if token in labels:
            found[token] = max(found.get(token, MISSING_LOGPROB), _value(entry))
    return [found.get(label, MISSING_LOGPROB) for label in labels]


def parse_generated_labels(text: str, labels: list[str]) -> list[str]:
    """The labels of a ``{"items": [...]}`` answer in order (invalid ones dropped, repeats kept);
    text that is not that JSON is read as a sequence of label-like tokens."""
    valid = set(labels)
    try:
        data = json.loads(text)
        items = data.get("items") if isinstance(data, dict) else data
        if isinstance(items, list):
            return [str(x).strip() for x in items if str(x).strip() in valid]
    except ValueError:
        pass
    return [t for t in re.findall(r"[A-Za-z0-9]+", text) if t in valid]


def finalize_labels(picked: list[str], labels: list[str], k: int, fallback_order: list[str] | None = None) -> list[str]:
    """``k`` distinct valid labels: the model's order first, then the fallback (score) order, then label order."""
    out: list[str] = []
    for label in [*picked, *(fallback_order or []), *labels]:
        if label in labels and label not in out:
            out.append(label)
        if len(out) >= min(k, len(labels)):
            break
    return out


def parse_chat_text(response: dict) -> str:
    """The assistant text of a chat completion, cut at the first newline."""
    try:
        text = response["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise ModelLoadError("the vLLM server's answer is not a chat completion (no choices[0].message)") from None
    return text.split("\n", 1)[0].strip()


def _needs_fill(lists: list[list[str]], k: list[int], labels: list[list[str]]) -> list[int]:
    return [n for n, (row, want, labs) in enumerate(zip(lists, k, labels)) if len(set(row)) < min(want, len(labs))]


def _score_order(labels: list[str], scores: list[float]) -> list[str]:
    return [label for label, _ in sorted(zip(labels, scores), key=lambda pair: -pair[1])]


# -- the in-process engine --------------------------------------------------------------------
def _import_vllm():
    try:
        import vllm
    except ImportError:
        raise ModelLoadError(VLLM_MISSING) from None
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
    """:class:`~recgen.lm.backend.LMBackend` over an in-process ``vllm.LLM`` (one engine per GPU)."""

    name = "vllm"

    def __init__(self, llm, tokenizer=None, lora_request=None, exact_label_logprobs: bool = False,
                 make_params=None):
        self.llm = llm
        self.tokenizer = tokenizer if tokenizer is not None else llm.get_tokenizer()
        self.lora_request = lora_request
        self.exact_label_logprobs = exact_label_logprobs
        #: spec dict → the engine's sampling params (vLLM's classes; tests pass a stand-in engine and identity)
        self.make_params = make_params or to_vllm_sampling_params
        self._label_cache: dict[str, int] = {}

    @classmethod
    def from_settings(cls, settings: LMSettings, **llm_options):
        """``settings.model`` may also be the URL of a ``vllm serve`` server (then :class:`VLLMServerBackend`)."""
        if settings.model and str(settings.model).startswith(("http://", "https://")):
            return VLLMServerBackend.from_settings(settings)
        vllm = _import_vllm()
        kwargs = engine_kwargs(settings, **llm_options)
        try:
            llm = vllm.LLM(**kwargs)
        except LOAD_ERRORS as exc:
            raise ModelLoadError(f"vLLM cannot load {kwargs['model']!r}: {exc}") from None
        lora = None
        if settings.adapter:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest(ADAPTER_NAME, 1, str(Path(settings.adapter).resolve()))
        return cls(llm, lora_request=lora)

    # -- prompts ------------------------------------------------------------------------------
    def _generate(self, prompts: list[ChatPrompt], specs: list[dict]):
        inputs = [{"prompt_token_ids": self.encode(p)} for p in prompts]
        params = [self.make_params(s) for s in specs]
        return self.llm.generate(inputs, params, lora_request=self.lora_request, use_tqdm=False)

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
        return _fill_short(self, prompts, labels, k, picked)

    def generate_text(self, prompts: list[ChatPrompt], max_new_tokens: int) -> list[str]:
        outputs = self._generate(prompts, [build_sampling_params("text", max_tokens=max_new_tokens)] * len(prompts))
        return [o.outputs[0].text.split("\n", 1)[0].strip() for o in outputs]


def _fill_short(backend, prompts, labels, k, picked) -> list[list[str]]:
    """De-duplicate generated lists; fill short ones from score-mode order (one scoring pass for those)."""
    short = _needs_fill(picked, k, labels)
    orders: dict[int, list[str]] = {}
    if short:
        scores = backend.score_labels([prompts[n] for n in short], [labels[n] for n in short])
        orders = {n: _score_order(labels[n], row) for n, row in zip(short, scores)}
    return [finalize_labels(row, labs, want, orders.get(n)) for n, (row, labs, want) in enumerate(zip(picked, labels, k))]


# -- a running `vllm serve` -------------------------------------------------------------------
class VLLMServerBackend:
    """:class:`~recgen.lm.backend.LMBackend` over ``vllm serve BASE --enable-lora --lora-modules name=path``.

    Start the server with ``--logprobs-mode processed_logprobs --max-logprobs 26`` so score mode sees
    every label. Requests are sent concurrently (``concurrency``) so the server can batch them."""

    name = "vllm-server"

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, timeout: float = 120.0,
                 concurrency: int = 16, client=None):
        import httpx

        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.model = model
        self.concurrency = concurrency
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.Client(timeout=timeout, headers=headers)

    @classmethod
    def from_settings(cls, settings: LMSettings) -> "VLLMServerBackend":
        """``lm`` = server URL; ``adapter`` = the served LoRA name (else the server's first model)."""
        import os

        backend = cls(settings.model, settings.adapter or "", api_key=os.environ.get("RECGEN_VLLM_API_KEY"))
        if not backend.model:
            models = backend._request("GET", "/models")
            try:
                backend.model = models["data"][0]["id"]
            except (KeyError, IndexError, TypeError):
                raise ModelLoadError(f"the vLLM server at {settings.model} lists no models") from None
        return backend

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        import httpx

        url = self.base_url + path if not path.startswith("/tokenize") else self.base_url[: -len("/v1")] + path
        try:
            reply = self.client.request(method, url, json=body)
        except httpx.HTTPError as exc:
            raise ModelLoadError(f"cannot reach the vLLM server at {self.base_url}: {exc}") from None
        if reply.status_code >= 400:
            try:
                message = reply.json().get("error", {}).get("message") or reply.text
            except ValueError:
                message = reply.text
            raise ModelLoadError(f"the vLLM server answered {reply.status_code}: {message[:500]}")
        return reply.json()

    def _chat_all(self, bodies: list[dict]) -> list[dict]:
        if len(bodies) <= 1:
            return [self._request("POST", "/chat/completions", b) for b in bodies]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(bodies))) as pool:
            return list(pool.map(lambda b: self._request("POST", "/chat/completions", b), bodies))

    def score_labels(self, prompts: list[ChatPrompt], labels: list[list[str]]) -> list[list[float]]:
        replies = self._chat_all([build_chat_request(p, self.model, "score", labels=row) for p, row in zip(prompts, labels)])
        return [parse_score_response(r, row) for r, row in zip(replies, labels)]

    def generate_labels(self, prompts: list[ChatPrompt], labels: list[list[str]], k: list[int]) -> list[list[str]]:
        replies = self._chat_all([build_chat_request(p, self.model, "generate", labels=row, k=want)
                                  for p, row, want in zip(prompts, labels, k)])
        picked = [parse_generated_labels(r["choices"][0]["message"]["content"] or "", row) for r, row in zip(replies, labels)]
        return _fill_short(self, prompts, labels, k, picked)

    def generate_text(self, prompts: list[ChatPrompt], max_new_tokens: int) -> list[str]:
        replies = self._chat_all([build_chat_request(p, self.model, "text", max_tokens=max_new_tokens) for p in prompts])
        return [parse_chat_text(r) for r in replies]

    def count_tokens(self, prompt: ChatPrompt) -> int:
        """vLLM's ``/tokenize`` endpoint applies the served chat template."""
        body = build_chat_request(prompt, self.model, "text", max_tokens=1)
        request = {k: body[k] for k in ("model", "messages") if k in body}
        if prompt.response_prefix:
            request.update(add_generation_prompt=False, continue_final_message=True)
        else:
            request["add_generation_prompt"] = True
        return int(self._request("POST", "/tokenize", request)["count"])
