"""``recgen serve`` (the HTTP API and web page) and ``recgen chat`` (the same conversation logic in a terminal)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from ..chat.state import ChatContext
from ..chat.turn import chat_turn
from ..errors import RecgenError
from ..recommender import open_dataset
from .common import console, friendly_errors, history_for_user, make_config
from .lifecycle import owned_processes

DatasetOpt = typer.Option("ml-100k", "--dataset", "-d", help="dataset name (under RECGEN_DATA_DIR or ../shared/data) or folder")
LmOpt = typer.Option(None, help="HF model id or folder (default SmolLM2-135M-Instruct)")
AdapterOpt = typer.Option(None, help="peft LoRA adapter folder")
EmbedderOpt = typer.Option(None, help="sentence-transformers name or path")
ConfigOpt = typer.Option(None, help="config file (JSON or YAML) with RecgenConfig keys")
BackendOpt = typer.Option(None, "--backend", help="transformers (default) or vllm (in-process engine; needs vLLM: "
                          "`make setup-vllm` for the CPU build)")
LoraOpt = typer.Option(None, "--lora", help="a named LoRA adapter NAME=FOLDER, repeatable: one engine serves them all; "
                       "a request picks one by name (`adapter`, or the OpenAI `model` field)")


def parse_loras(values: list[str] | None) -> dict[str, str] | None:
    """``["a=/x", "b=/y"]`` → ``{"a": "/x", "b": "/y"}``; a malformed or repeated name is a usage error."""
    if not values:
        return None
    out: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise typer.BadParameter(f"--lora takes NAME=FOLDER, not {value!r}")
        if name.strip() in out:
            raise typer.BadParameter(f"--lora name {name.strip()!r} is given twice")
        out[name.strip()] = path.strip()
    return out


def _check_mode(mode: str) -> None:
    if mode not in ("score", "generate"):
        raise typer.BadParameter("mode must be 'score' or 'generate'")


def _warm_up(rec) -> None:
    """Load the LM and the query embedder now, so the first request is not the slow one."""
    rec.backend  # noqa: B018 - loads the model
    rec.recommend(query="warm up", k=1, reasons=False)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@friendly_errors
def serve(dataset: str = DatasetOpt,
          host: str = typer.Option("127.0.0.1", help="interface to listen on (0.0.0.0 exposes it to the network)"),
          port: int = typer.Option(8000, min=1, max=65535),
          lm: Optional[str] = LmOpt, adapter: Optional[str] = AdapterOpt, embedder: Optional[str] = EmbedderOpt,
          config: Optional[Path] = ConfigOpt, backend: Optional[str] = BackendOpt,
          lora: Optional[list[str]] = LoraOpt,
          api_key: Optional[str] = typer.Option(None, "--api-key", envvar="RECGEN_API_KEY",
                                                help="require 'Authorization: Bearer <key>' on /v1/*"),
          max_concurrency: int = typer.Option(16, min=1, help="requests running or queued at once; more get 429"),
          timeout: float = typer.Option(120.0, min=0.1, help="seconds per request, queueing included; then 504"),
          max_body_bytes: int = typer.Option(1_000_000, min=256, help="larger request bodies get 413"),
          max_message_chars: int = typer.Option(4000, min=1, help="longer chat messages get 400"),
          served_model_name: str = typer.Option("recgen", help="model name in /v1/models and chat requests"),
          log_level: str = typer.Option("info", help="uvicorn log level")) -> None:
    """Serve the OpenAI-compatible chat API, structured recommendations and a web chat page at '/'."""
    import uvicorn

    from ..server.app import create_app
    from ..server.serving import ServerSettings

    if backend not in (None, "transformers", "vllm"):
        raise typer.BadParameter("--backend must be 'transformers' or 'vllm'")
    cfg = make_config(config, lm={"model": lm, "adapter": adapter, "backend": backend, "adapters": parse_loras(lora)},
                      retrieval={"embedder": embedder})
    settings = ServerSettings(api_key=api_key or None, max_concurrency=max_concurrency, timeout=timeout,
                              max_body_bytes=max_body_bytes, max_message_chars=max_message_chars,
                              served_model_name=served_model_name)
    opened: list = []
    # Every process started from here on (vLLM's EngineCore and Worker) is stopped on the way out, whatever
    # ends the server: SIGTERM, Ctrl-C, an error while loading.
    with owned_processes(close=lambda: [rec.close() for rec in opened]):
        data, rec = open_dataset(dataset, cfg)
        opened.append(rec)
        console.print(f"loading the language model ({cfg.lm.backend} backend)…")
        _warm_up(rec)
        app = create_app(rec, data, settings)
        if not _is_loopback(host) and not api_key:
            console.print("[bold yellow]warning:[/] listening beyond loopback without --api-key: anyone who can "
                          "reach this port can use it")
        url = f"http://{host}:{port}"
        console.print(startup_summary(rec, cfg), soft_wrap=True)
        console.print(f"serving {len(rec.catalog)} items of {data.name} as model {served_model_name!r}: web chat "
                      f"{url}/ , OpenAI base URL {url}/v1 {'(API key required)' if api_key else ''}")
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


def startup_summary(rec, cfg) -> str:
    """One line saying what is served: the second stage, the LM backend and model, the adapters."""
    adapters = sorted(cfg.lm.adapters) or (["default (" + str(cfg.lm.adapter) + ")"] if cfg.lm.adapter else [])
    model = cfg.lm.model or "SmolLM2-135M-Instruct (default)"
    return (f"second stage: {rec.pipeline.describe_second_stage()}; LM: {model} on the {cfg.lm.backend} backend; "
            f"adapters: {', '.join(adapters) if adapters else 'none (base model)'}")


def _show_turn(reply, title: str) -> None:
    for note in reply.notes:
        console.print(f"[yellow]{note}[/]")
    filters = reply.state.constraints.describe()
    if not reply.recommendations:
        console.print(reply.text.splitlines()[-1])
        return
    table = Table(title=title + (f" — filters: {'; '.join(filters)}" if filters else ""), show_lines=False)
    for column in ("#", "item", "title", "reason"):
        table.add_column(column, overflow="fold")
    for r in reply.recommendations:
        table.add_row(str(r.rank), r.item_id, r.title, r.reason or "")
    console.print(table)


@friendly_errors
def chat(dataset: str = DatasetOpt,
         user: Optional[str] = typer.Option(None, "--user", "-u", help="a user id of the dataset, to personalise"),
         k: int = typer.Option(5, "-k", min=1, max=26, help="items per reply"),
         mode: str = typer.Option("score", help="score (verbalizer) or generate (constrained decoding)"),
         reasons: bool = typer.Option(True, "--reasons/--no-reasons"),
         lm: Optional[str] = LmOpt, adapter: Optional[str] = AdapterOpt, embedder: Optional[str] = EmbedderOpt,
         config: Optional[Path] = ConfigOpt) -> None:
    """Chat in the terminal: ask, then refine ("not horror", "only after 1990", "more like the second one")."""

    _check_mode(mode)
    cfg = make_config(config, lm={"model": lm, "adapter": adapter}, retrieval={"embedder": embedder})
    data, rec = open_dataset(dataset, cfg)
    history = history_for_user(data, user) if user is not None else []
    context = ChatContext.from_catalog(rec.catalog)
    who = f"user {user}" if user is not None else None
    console.print(f"recgen chat over {len(rec.catalog)} items of {data.name}"
                  f"{' for ' + who if who else ''}. Type a request; /reset starts over, /quit leaves.")
    messages: list[dict] = []
    while True:
        try:
            text = console.input("[bold cyan]you>[/] ").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            break
        if not text:
            continue
        if text in ("/quit", "/exit", "/q"):
            break
        if text == "/reset":
            messages = []
            console.print("[dim](new conversation)[/]")
            continue
        messages.append({"role": "user", "content": text})
        try:
            reply = chat_turn(rec, context, messages, history=history, k=k, mode=mode, reasons=reasons, who=who)
        except RecgenError as exc:
            console.print(f"[bold red]error:[/] {exc}")
            messages.pop()
            continue
        messages.append({"role": "assistant", "content": reply.text})
        _show_turn(reply, f"turn {len(messages) // 2}")
