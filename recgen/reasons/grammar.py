"""The grammar of a grounded reason: every sentence the LM may write for one recommendation, built from its
facts (``prompt.reasons: grammar``).

The backend lets the model write exactly one of these sentences, choosing token by token (a trie over their
tokens on transformers, ``structured_outputs={"choice": ...}`` on vLLM: the same language on both engines). The
model picks the opening, the link and the facts it names; it cannot write a word the facts do not hold, half a
title, or an unfinished sentence. Why: on Amazon Beauty (titles only) SmolLM2-135M under word-level
constraints (``grounded``) wrote a passing sentence for 57 % of items; the rest were garbled or unfinished and
replaced by a fact-built sentence (``eval/results/reasons/NOTES.md``).

The sentences compose what :func:`.grounding.phrase_reason` writes (the fine-tuning targets and the fallback):
openings x links x endings, each true of the facts by construction.
"""

from __future__ import annotations

import re

from .grounding import PATTERNS, PromptFacts, fill_pattern, pattern_kind, prompt_values, unrequested

#: Sentences that say why from the user's side.
BECAUSE = ("Because you liked {related}.", "Recommended because you liked {related}.",
           "If you liked {related}, try this one.")
#: Sentences for what both items have: genres, or the words both titles' main parts use. They state the shared
#: label as a fact of both, never "like {related}": v4c hand grades found "A Drama pick, like <a bleak art
#: drama>" of a children's film partly true (the same label, not alike as "like" suggests), 3 of 30.
SHARED = ("Shares {shared} with {related}, which you liked.", "Another {words} pick after {related}, which you liked.")
SHARED_GENRES = ("If you liked {related}, this is also {shared}.", "Like {related}, which you liked, it is {shared}.",
                 "{shared_cap}, as is {related}, which you liked.", "{a_shared} pick, as is {related}, which you liked.")
#: Sentences naming the item's own attributes beside the liked item.
ATTRIBUTES = ("{a_attributes} pick for fans of {related}.",)
#: When the liked item is the closest in the history but not close (no shared attribute, embedding cosine
#: under the catalog's related threshold, no co-purchase): a sentence that names it without calling the two
#: close or similar ("A close match for <soap bar>" of an eye shadow was the hand-graded failure).
#: Twelve of them, so a list of ten whose items all come back to one liked item never says one twice (with six,
#: 2 of 16 Beauty lists did: eval/results/reasons/NOTES.md, session 30), in different frames: the liked item
#: after "liked", "with", "in", "if" or "given", and only some with "you liked" (ten frames around "because/since
#: you liked X" kept Beauty lists at distinct-2 0.30-0.40: the same word pairs in every reason). Each says only
#: that the user liked it and the recommender went by that (the basis), in generic words (:data:`.facts
#: .GENERIC_WORDS`): none calls the two alike.
WEAK = ("Because you liked {related}.", "You liked {related}, so try this one.",
        "With {related} in your history, try this one.", "Your interest in {related} suggested this pick.",
        "Since you liked {related}, here is one to try.", "If {related} was to your taste, try this one.",
        "One to try, given {related} in your history.", "Recommended for you since you liked {related}.",
        "A pick for you, since you liked {related}.", "Suggested because you liked {related}.",
        "An option for you, as you liked {related}.", "One more pick because you liked {related}.")
#: Only when at least two other users had both items (the facts then hold that fans of one had the other); the
#: fact-built patterns (:data:`.grounding.PATTERNS`, what the worked example shows) are choices too.
CO_LIKED = ("Fans of {related} also liked this one.", "Also liked by fans of {related}, which you liked.")


#: Words that call two items alike in general. The grammar never says them: the catalog's facts support
#: likeness only in what two items share, so a reason states that ("Like X, which you liked, it is Drama"). v4
#: hand grades found bare "A close match for X" / "Just like X" overstated between films of the same genres; v5
#: found "Much like Sense and Sensibility, as both are Drama and Romance" (of Jerry Maguire) overstated too,
#: though it said in what; neither embedding cosine nor co-likes separated the accepted pairs from these.
LIKENESS = re.compile(r"\b(?:close|closer|closest|similar|match|much like|just like)\b", re.IGNORECASE)


def reason_choices(facts: PromptFacts, title_chars: int, co_liked: bool = False, weak: bool = False) -> list[str]:
    """Every sentence the model may choose for ``facts``, each with a leading space (the answer continues the
    prompt's ``Reason:``), the one a fallback serves first. Without a related history item: the request and
    attribute patterns of :data:`.grounding.PATTERNS`. ``co_liked``: two or more other users had both the item
    and the related one (the fans sentences); ``weak``: nothing links the two, so only :data:`WEAK` sentences.
    No sentence calls the two close or similar (:data:`LIKENESS`); sentences naming the item's attributes only
    when some are left after those the request already says."""
    values = prompt_values(facts, title_chars)
    if facts.related is None:
        patterns = list(PATTERNS[pattern_kind(facts, values)])
    elif weak:
        patterns = list(WEAK)
    else:
        kind = pattern_kind(facts, values)
        patterns = []
        if values["shared"]:
            patterns += (SHARED_GENRES if facts.shares_genres else ()) + SHARED
        patterns += list(PATTERNS[kind]) if kind != "transition" or co_liked else []
        if co_liked:
            patterns += CO_LIKED
        patterns += list(BECAUSE)
        if unrequested(values) and co_liked:
            # "for fans of X" says something of X's fans: only when two or more other users had both. A shared
            # genre is not enough: "A Drama and Mystery pick for fans of Jack" (a police drama for fans of a
            # family comedy-drama, both Drama) was hand-graded partly true (v5), as were "A Crime pick for fans
            # of <an action film>" (no shared genre) and "A Romance pick for fans of <a comedy>" (v3); all
            # attributes requested: "A pick for fans of X" names none
            patterns += ATTRIBUTES
        patterns += WEAK
        patterns = [p for p in patterns if not LIKENESS.search(p)]  # e.g. the fact-built "Close to X"
    return list(dict.fromkeys(" " + fill_pattern(p, values) for p in patterns))
