"""The prompt a backend receives: chat messages, the text the assistant's turn starts with, and typed channels
for what the backend must honour (candidate labels, a decoding constraint, the LoRA adapter)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .constraint import CONSTRAINTS, Choice, Vocabulary


@dataclass(frozen=True)
class ChatPrompt:
    """Messages for a chat model plus text the assistant's turn starts with (often empty).

    ``labels``: the single-token labels of a ranking prompt's candidates (what ``score_labels`` and
    ``generate_labels`` are asked about); ``constraint``: what a ``generate_text`` answer may be (at most one,
    :mod:`.constraint`); ``adapter``: the named LoRA adapter to run it under (None = the backend's default,
    ``"base"`` = none). Frozen: set a channel with ``dataclasses.replace``, which checks it again."""

    messages: list[dict[str, str]]
    response_prefix: str = ""
    labels: tuple[str, ...] = ()
    constraint: Choice | Vocabulary | None = None
    adapter: str | None = field(default=None)

    def __post_init__(self) -> None:
        if isinstance(self.labels, str):
            raise TypeError("ChatPrompt labels must be a list of strings, not one string")
        object.__setattr__(self, "labels", tuple(self.labels))
        if self.constraint is not None and not isinstance(self.constraint, CONSTRAINTS):
            raise TypeError(f"ChatPrompt constraint must be Choice, Vocabulary or None, not "
                            f"{type(self.constraint).__name__}")
        if self.constraint is not None and self.labels:
            raise ValueError("a ChatPrompt carries labels (ranking) or a constraint (text), not both")
        if self.adapter is not None and not isinstance(self.adapter, str):
            raise TypeError(f"ChatPrompt adapter must be a name or None, not {type(self.adapter).__name__}")
