"""Prompt templates are Jinja2 files (``prompts/`` in the repo, ``recgen/prompts`` in the wheel)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

from ..errors import ConfigError
from ..lm.prompt import ChatPrompt


def default_prompts_dir() -> Path:
    packaged = Path(__file__).resolve().parents[1] / "prompts"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "prompts"


@lru_cache(maxsize=8)
def _environment(folder: str) -> jinja2.Environment:
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"prompt folder {folder} does not exist")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(folder), undefined=jinja2.StrictUndefined, autoescape=False,
        keep_trailing_newline=False,
    )


def render(name: str, folder: str | None = None, **values) -> str:
    env = _environment(str(folder or default_prompts_dir()))
    try:
        return env.get_template(f"{name}.jinja").render(**values).strip()
    except jinja2.TemplateNotFound:
        raise ConfigError(f"prompt template {name}.jinja not found in {folder or default_prompts_dir()}") from None


def chat(name: str, folder: str | None = None, response_prefix: str = "", **values) -> ChatPrompt:
    return ChatPrompt(
        [{"role": "system", "content": render("system", folder)},
         {"role": "user", "content": render(name, folder, **values)}],
        response_prefix,
    )


def shorten(text: str, limit: int) -> str:
    """Cut to ``limit`` characters at a word boundary where possible: prompts must stay compact on CPU."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if " " in cut[limit // 2:]:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip(" ,;:-") + "…"
