"""Prompt templates are Jinja2 files (``prompts/`` in the repo, ``recgen/prompts`` in the wheel).

``prompt.prompts_dir`` comes from a config file, so a template is untrusted input: it is rendered in
Jinja2's immutable sandbox (no ``__globals__``/``__class__`` walks, no mutating the values passed in),
and anything the sandbox refuses or the template's own expressions raise is a :class:`~recgen.errors.ConfigError`
naming the template. ``*`` and ``**`` are bounded; other filters can still spend CPU (see the robustness report).
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import jinja2
from jinja2.exceptions import SecurityError, TemplateSyntaxError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import ConfigError
from .prompt import ChatPrompt


def default_prompts_dir() -> Path:
    packaged = Path(__file__).resolve().parents[1] / "prompts"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "prompts"


#: The largest string or list a template's ``*`` may build, and the largest power ``**`` may compute (digits).
MAX_REPEAT, MAX_POWER_DIGITS = 100_000, 100
#: What a template's own expressions raise (``range(10**9)``, ``1 / 0``, ``[][1]``, ``int('x')``, deep recursion).
_TEMPLATE_RUNTIME_ERRORS = (ArithmeticError, LookupError, TypeError, ValueError, RecursionError, MemoryError)


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox with ``*`` and ``**`` bounded, so ``'x' * 10**9`` or ``9 ** 9 ** 9`` is refused at
    once instead of taking the process's memory or CPU (the sandbox already caps ``range``)."""

    intercepted_binops = frozenset(["*", "**"])

    def call_binop(self, context, operator: str, left, right):
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(n, int) and len(seq) * n > MAX_REPEAT:
                    raise SecurityError(f"a repetition of {len(seq)} x {n} is above {MAX_REPEAT:,}")
        if operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
            if right * math.log10(abs(left)) > MAX_POWER_DIGITS:
                raise SecurityError(f"{left} ** {right} has more than {MAX_POWER_DIGITS} digits")
        return super().call_binop(context, operator, left, right)


@lru_cache(maxsize=8)
def _environment(folder: str) -> ImmutableSandboxedEnvironment:
    path = Path(folder)
    if not path.is_dir():
        raise ConfigError(f"prompt folder {folder} does not exist")
    return _BoundedSandbox(
        loader=jinja2.FileSystemLoader(folder), undefined=jinja2.StrictUndefined, autoescape=False,
        keep_trailing_newline=False,
    )


def render(name: str, folder: str | None = None, **values) -> str:
    folder = str(folder or default_prompts_dir())
    env = _environment(folder)
    where = Path(folder) / f"{name}.jinja"
    try:
        return env.get_template(f"{name}.jinja").render(**values).strip()
    except jinja2.TemplateNotFound:
        raise ConfigError(f"prompt template {name}.jinja not found in {folder}") from None
    except SecurityError as exc:
        raise ConfigError(f"prompt template {where} tries something unsafe and was not rendered ({exc}); "
                          "templates may only format the values they are given") from None
    except TemplateSyntaxError as exc:
        raise ConfigError(f"prompt template {exc.filename or where}, line {exc.lineno}: {exc.message}") from None
    except UndefinedError as exc:
        raise ConfigError(f"prompt template {where} uses a value it is not given: {exc.message}") from None
    except jinja2.TemplateError as exc:
        raise ConfigError(f"prompt template {where} cannot be rendered: {exc}") from None
    except _TEMPLATE_RUNTIME_ERRORS as exc:
        raise ConfigError(f"prompt template {where} fails when rendered ({type(exc).__name__}: {str(exc)[:200]}); "
                          "templates may only format the values they are given") from None


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
