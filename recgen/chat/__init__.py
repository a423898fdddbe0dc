"""Conversational recommending: the catalog's chat vocabulary, turns read with plain rules, the constraints
they add up to (a candidate filter), and the conversation state rebuilt from OpenAI-style messages.

Used by ``POST /v1/chat/completions`` (recgen.server) and ``recgen chat`` (recgen.cli).
"""

from .constraints import Constraints, apply_constraints, blocked_items, merge_turn, starts_new_request
from .parser import TurnConstraints, parse_turn
from .vocabulary import ChatVocabulary

__all__ = ["ChatVocabulary", "Constraints", "TurnConstraints", "apply_constraints", "blocked_items", "merge_turn",
           "parse_turn", "starts_new_request"]
