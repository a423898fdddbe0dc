"""What recgen sends to vLLM and reads back, as pure functions over plain dicts (no vLLM needed):
sampling-parameter specs and engine arguments for the in-process engine (:mod:`.vllm_engine`), chat
completion bodies for a ``vllm serve`` server (:mod:`.vllm_client`), and the parsing of both answers.

How each :class:`~recgen.lm.backend.LMBackend` operation maps onto vLLM:

* **score** — one generated token, greedy, ``allowed_token_ids`` = the label tokens and
  ``logprobs`` = the number of labels. vLLM computes logprobs *before* the allowed-token mask unless
  the engine runs with ``logprobs_mode="processed_logprobs"`` (set here; for a server pass
  ``--logprobs-mode processed_logprobs``), so that the top-N returned are exactly the labels
  (renormalised over them, which keeps their order). ``exact_label_logprobs=True`` also asks for
  ``SamplingParams.logprob_token_ids`` (newer vLLM; see :func:`.vllm_engine.supports_label_logprobs`), the labels'
  own log-probabilities; it is off by default. A label absent from the returned list scores
  :data:`MISSING_LOGPROB`.
* **generate** — structured outputs with a regex of exactly ``k`` labels, one a line: what the ranking
  prompt asks for ("one letter a line") and what the transformers backend enforces. A regex does not
  enforce uniqueness, so the list is de-duplicated and validated afterwards, and a short list is filled
  from the score-mode order.
* **choice** (grammar reasons, jump-forward: :mod:`.choices`) — one token, greedy, ``allowed_token_ids`` = the
  tokens that continue one of the prompt's sentences after what it has written; the engine is asked only at
  the sentences' branching tokens, the tokens between are appended by recgen, and the next round continues
  prompt + written tokens (prefix caching keeps the prompt's KV).
* **text** (reasons) — greedy, ``max_tokens``, ``stop=["\\n"]``. A constrained reason (a prompt with
  ``ChatPrompt.constraint`` a ``Vocabulary``, :mod:`.vocabulary`) also carries ``allowed_token_ids`` in the engine (the very ids
  the transformers backend allows, :class:`.constrained.AllowedTokens`) and, on a ``vllm serve`` server, which
  recgen reaches without a tokenizer, ``structured_outputs={"regex": vocabulary_regex(words)}``: a word-level
  grammar of the same vocabulary (both are request fields of vLLM's chat completions and ``SamplingParams``).

With LoRA adapters, each request carries the ``LoRARequest(name, id, path)`` of the adapter its prompt
selects (:mod:`.adapters`), so one batch can mix adapters; vLLM rejects adapters with ``modules_to_save``
(full ``lm_head``/``embed_tokens``) and ranks above ``max_lora_rank``, and recgen refuses them at load.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from ..config import MAX_CANDIDATES
from ..errors import ModelLoadError
from .adapters import check_adapter
from .choices import choices_of
from .prompt import ChatPrompt
from .vocabulary import vocabulary_of, vocabulary_regex

#: Score of a label that vLLM did not return among the top log-probabilities (finite, so JSON-safe).
MISSING_LOGPROB = -1.0e4
#: LoRA ranks vLLM accepts for ``max_lora_rank``.
LORA_RANKS = (8, 16, 32, 64, 128, 256, 512)


# -- request building -------------------------------------------------------------------------
def label_json_schema(labels: list[str], k: int) -> dict:
    """``{"items": [k labels]}``; enum does not make them distinct (checked afterwards). Kept for clients that
    want JSON; recgen's own prompts ask for one label a line (:func:`label_lines_regex`)."""
    return {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"type": "string", "enum": list(labels)},
                                 "minItems": k, "maxItems": k}},
        "required": ["items"],
        "additionalProperties": False,
    }


def label_lines_regex(labels: list[str], k: int) -> str:
    """Exactly ``k`` labels, one a line: the format the ranking prompt asks for and the transformers backend
    enforces token by token. A regex cannot make them distinct: repeats are dropped afterwards and the list
    filled from the score order (:func:`fill_short`)."""
    one = "(" + "|".join(re.escape(label) for label in labels) + ")"
    return one + ("(\n" + one + "){%d}" % (k - 1) if k > 1 else "")


def generate_max_tokens(k: int) -> int:
    """Room for ``k`` labels and ``k - 1`` newlines (one token each for single-token labels), plus slack."""
    return 2 * k + 2


def build_sampling_params(kind: str, *, label_ids: list[int] | None = None, labels: list[str] | None = None,
                          k: int | None = None, max_tokens: int | None = None,
                          exact_label_logprobs: bool = False, allowed_token_ids: list[int] | None = None,
                          choices: list[str] | None = None) -> dict:
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
                "structured_outputs": {"regex": label_lines_regex(labels, k)}}
    if kind == "choice":  # one jump-forward round (:meth:`.vllm_engine.VLLMBackend._choose`): the next token
        if not allowed_token_ids:
            raise ValueError("choice mode needs allowed_token_ids")
        return {"max_tokens": 1, "temperature": 0.0, "allowed_token_ids": list(allowed_token_ids)}
    if kind == "text":
        if not max_tokens:
            raise ValueError("text mode needs max_tokens")
        params = {"max_tokens": max_tokens, "temperature": 0.0, "stop": ["\n"]}
        if choices:
            params["structured_outputs"] = {"choice": list(choices)}
        elif allowed_token_ids:
            params["allowed_token_ids"] = list(allowed_token_ids)
        return params
    raise ValueError(f"kind must be score, generate, choice or text, not {kind!r}")


def build_llm_kwargs(model: str, *, adapter: str | None = None, trust_remote_code: bool = False,
                     dtype: str = "auto", seed: int = 0, lora_rank: int | None = None, max_loras: int = 1,
                     **extra) -> dict:
    """Arguments of ``vllm.LLM``: prefix caching on (prompts share the instruction), processed
    logprobs (see the module doc), room for every label's logprob, LoRA only with adapters
    (``lora_rank`` = the largest rank to serve, or read from ``adapter``'s folder)."""
    kwargs = {"model": model, "enable_prefix_caching": True, "logprobs_mode": "processed_logprobs",
              "max_logprobs": MAX_CANDIDATES, "trust_remote_code": trust_remote_code, "dtype": dtype, "seed": seed}
    if adapter or lora_rank:
        rank = lora_rank if lora_rank else adapter_rank(adapter)
        kwargs.update(enable_lora=True, max_loras=max_loras, max_lora_rank=lora_rank_limit(rank))
    kwargs.update(extra)
    return kwargs


def adapter_rank(adapter: str | Path) -> int:
    """The ``r`` of a peft adapter folder; refuses what vLLM cannot load (modules_to_save)."""
    return check_adapter(Path(adapter).name, str(adapter), None, None).rank


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
        body.update(max_tokens=generate_max_tokens(k), structured_outputs={"regex": label_lines_regex(labels, k)})
    elif kind == "text":
        if not max_tokens:
            raise ValueError("text mode needs max_tokens")
        body.update(max_tokens=max_tokens, stop=["\n"])
        vocabulary, choices = vocabulary_of(prompt), choices_of(prompt)
        if choices:
            body["structured_outputs"] = {"choice": choices}
        elif vocabulary:
            body["structured_outputs"] = {"regex": vocabulary_regex(list(vocabulary.words), list(vocabulary.phrases))}
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
    """The labels of a one-label-a-line answer (or a ``{"items": [...]}`` JSON one) in order, invalid ones
    dropped, repeats kept."""
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


def chat_content(response: dict) -> str:
    """The assistant text of a chat completion (``choices[0].message.content``)."""
    try:
        return response["choices"][0]["message"]["content"] or ""
    except (KeyError, IndexError, TypeError):
        raise ModelLoadError("the vLLM server's answer is not a chat completion (no choices[0].message)") from None


def parse_chat_text(response: dict) -> str:
    """The assistant text of a chat completion, cut at the first newline."""
    return chat_content(response).split("\n", 1)[0].strip()


def _needs_fill(lists: list[list[str]], k: list[int], labels: list[list[str]]) -> list[int]:
    return [n for n, (row, want, labs) in enumerate(zip(lists, k, labels)) if len(set(row)) < min(want, len(labs))]


def _score_order(labels: list[str], scores: list[float]) -> list[str]:
    return [label for label, _ in sorted(zip(labels, scores), key=lambda pair: -pair[1])]


def fill_short(backend, prompts, labels, k, picked) -> list[list[str]]:
    """De-duplicate generated lists; fill short ones from score-mode order (one scoring pass for those)."""
    short = _needs_fill(picked, k, labels)
    orders: dict[int, list[str]] = {}
    if short:
        scores = backend.score_labels([prompts[n] for n in short], [labels[n] for n in short])
        orders = {n: _score_order(labels[n], row) for n, row in zip(short, scores)}
    return [finalize_labels(row, labs, want, orders.get(n)) for n, (row, labs, want) in enumerate(zip(picked, labels, k))]
