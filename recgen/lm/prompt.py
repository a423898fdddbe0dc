"""The prompt a backend receives: chat messages plus the text the assistant's turn starts with."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class ChatPrompt:
    """Messages for a chat model plus text the assistant's turn starts with (often empty); ``meta`` carries
    what the caller needs back (e.g. the candidate labels)."""

    messages: list[dict[str, str]]
    response_prefix: str = ""
    meta: dict = field(default_factory=dict)
