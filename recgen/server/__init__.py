"""HTTP serving: an OpenAI-compatible chat endpoint, structured recommendations, and a small web page.

``create_app`` needs FastAPI; the chat logic it serves lives in :mod:`recgen.chat` (``recgen chat`` uses it too).
"""

from __future__ import annotations

__all__ = ["create_app", "ServerSettings"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "ServerSettings":
        from .serving import ServerSettings

        return ServerSettings
    raise AttributeError(name)
