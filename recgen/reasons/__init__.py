"""Reasons for recommendations: the facts, what "grounded" means, the fact check, the prompts and their styles,
the grammar of a reason and the stage that writes them (:mod:`.reasoner`)."""
