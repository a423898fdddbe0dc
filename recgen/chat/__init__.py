"""Conversational recommending: constraints read from chat turns and applied as a candidate filter."""

from .constraints import (ChatVocabulary, Constraints, TurnConstraints, apply_constraints, blocked_items,
                          merge_turn, parse_turn)

__all__ = ["ChatVocabulary", "Constraints", "TurnConstraints", "apply_constraints", "blocked_items", "merge_turn",
           "parse_turn"]
