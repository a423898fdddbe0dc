"""An :class:`~recgen.lm.backend.LMBackend` over HTTP for a running ``vllm serve`` server (the
OpenAI-compatible chat completions API plus vLLM's ``/tokenize``); bodies and parsing are in
:mod:`.vllm_requests`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import httpx

from ..config import LMSettings
from ..errors import ModelLoadError
from .adapters import BASE, UnknownAdapterError
from .prompt import ChatPrompt
from .vllm_requests import (
    build_chat_request,
    chat_content,
    fill_short,
    parse_chat_text,
    parse_generated_labels,
    parse_score_response,
)

#: Seconds one HTTP request to the server may take (connect and read); ``timeout_s`` overrides it.
DEFAULT_TIMEOUT_S = 120.0


class VLLMServerBackend:
    """:class:`~recgen.lm.backend.LMBackend` over ``vllm serve BASE --enable-lora --lora-modules name=path``.

    Start the server with ``--logprobs-mode processed_logprobs --max-logprobs 26`` so score mode sees
    every label (:mod:`.vllm_server` does). Requests are sent concurrently (``concurrency``) so the server
    can batch them. A prompt that selects an adapter (``ChatPrompt.adapter``) is sent with that
    served name as ``model``; ``base`` is the base model; other names are refused, listing ``/v1/models``."""

    name = "vllm-server"

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, concurrency: int = 16, client: httpx.Client | None = None):
        """``timeout_s`` bounds each HTTP request (connect and read); a long batch of reasons on a busy
        server may need more. ``client`` lets tests pass an ``httpx.Client`` over a mock transport."""
        if not timeout_s or timeout_s <= 0:
            raise ModelLoadError(f"timeout_s must be a positive number of seconds, not {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self.base_url = base_url.rstrip("/")
        if not self.base_url.endswith("/v1"):
            self.base_url += "/v1"
        self.model = model
        self.concurrency = concurrency
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.Client(timeout=self.timeout_s, headers=headers)
        self._served: list[dict] | None = None

    def served_models(self) -> list[dict]:
        """The server's ``/v1/models`` cards (fetched once)."""
        if self._served is None:
            self._served = list(self._request("GET", "/models").get("data") or [])
        return self._served

    def _model_for(self, prompt: ChatPrompt) -> str:
        name = prompt.adapter
        if name is None:
            return self.model
        cards = self.served_models()
        if name == BASE:
            roots = [c["id"] for c in cards if not c.get("parent")]
            return roots[0] if roots else self.model
        if any(c.get("id") == name for c in cards):
            return name
        served = ", ".join([BASE, *[c.get("id", "?") for c in cards if c.get("parent")]])
        raise UnknownAdapterError(f"adapter {name!r} is not served by the vLLM server at {self.base_url}; "
                                  f"use one of: {served}")

    @classmethod
    def from_settings(cls, settings: LMSettings, *, timeout_s: float | None = None) -> "VLLMServerBackend":
        """``lm`` = server URL; ``adapter`` = the served LoRA name (else the server's first model)."""
        backend = cls(settings.model, settings.adapter or "", api_key=os.environ.get("RECGEN_VLLM_API_KEY"),
                      timeout_s=timeout_s or settings.timeout_s)
        if not backend.model:
            models = backend._request("GET", "/models")
            try:
                backend.model = models["data"][0]["id"]
            except (KeyError, IndexError, TypeError):
                raise ModelLoadError(f"the vLLM server at {settings.model} lists no models") from None
        return backend

    def _request(self, method: str, path: str, body: dict | None = None) -> dict:
        url = self.base_url + path if not path.startswith("/tokenize") else self.base_url[: -len("/v1")] + path
        try:
            reply = self.client.request(method, url, json=body, timeout=self.timeout_s)
        except httpx.TimeoutException as exc:
            raise ModelLoadError(
                f"the vLLM server at {self.base_url} did not answer {path} within timeout_s={self.timeout_s:g} s "
                f"({type(exc).__name__}): raise the config setting lm.timeout_s "
                "(RecgenConfig(lm={\"timeout_s\": ...})), send smaller batches, or check that the server is not overloaded"
            ) from None
        except httpx.HTTPError as exc:
            raise ModelLoadError(f"cannot reach the vLLM server at {self.base_url}: {exc}") from None
        if reply.status_code >= 400:
            try:
                message = reply.json().get("error", {}).get("message") or reply.text
            except ValueError:
                message = reply.text
            raise ModelLoadError(f"the vLLM server answered {reply.status_code}: {message[:500]}")
        try:
            return reply.json()
        except ValueError:
            raise ModelLoadError(f"the vLLM server at {self.base_url} answered {path} with something that is not "
                                 f"JSON ({reply.text[:200]!r}): is {self.base_url} a `vllm serve` server?") from None

    def _chat_all(self, bodies: list[dict]) -> list[dict]:
        if len(bodies) <= 1:
            return [self._request("POST", "/chat/completions", b) for b in bodies]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(bodies))) as pool:
            return list(pool.map(lambda b: self._request("POST", "/chat/completions", b), bodies))

    def score_labels(self, prompts: list[ChatPrompt], labels: list[list[str]]) -> list[list[float]]:
        replies = self._chat_all([build_chat_request(p, self._model_for(p), "score", labels=row) for p, row in zip(prompts, labels)])
        return [parse_score_response(r, row) for r, row in zip(replies, labels)]

    def generate_labels(self, prompts: list[ChatPrompt], labels: list[list[str]], k: list[int]) -> list[list[str]]:
        replies = self._chat_all([build_chat_request(p, self._model_for(p), "generate", labels=row, k=want)
                                  for p, row, want in zip(prompts, labels, k)])
        picked = [parse_generated_labels(chat_content(r), row) for r, row in zip(replies, labels)]
        return fill_short(self, prompts, labels, k, picked)

    def generate_text(self, prompts: list[ChatPrompt], max_new_tokens: int) -> list[str]:
        replies = self._chat_all([build_chat_request(p, self._model_for(p), "text", max_tokens=max_new_tokens)
                                  for p in prompts])
        return [parse_chat_text(r) for r in replies]

    def count_tokens(self, prompt: ChatPrompt) -> int:
        """vLLM's ``/tokenize`` endpoint applies the served chat template."""
        body = build_chat_request(prompt, self._model_for(prompt), "text", max_tokens=1)
        request = {k: body[k] for k in ("model", "messages") if k in body}
        if prompt.response_prefix:
            request.update(add_generation_prompt=False, continue_final_message=True)
        else:
            request["add_generation_prompt"] = True
        return int(self._request("POST", "/tokenize", request)["count"])
