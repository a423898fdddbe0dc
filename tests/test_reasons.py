"""The reason fact-check on hand-written reasons, and fallbacks that are true by construction."""

import time

import pytest

from recgen.data import Catalog, Item
from recgen.reasons.checker import ReasonChecker, clean_reason, fallback_reason, short_title

CATALOG = Catalog([
    Item("1", "Toy Story (1995)", ("Animation", "Comedy"), 1995),
    Item("2", "Usual Suspects, The (1995)", ("Crime", "Thriller"), 1995),
    Item("3", "Shining, The (1980)", ("Horror",), 1980),
    Item("4", "Aladdin (1992)", ("Animation", "Comedy", "Musical"), 1992),
])
CHECK = ReasonChecker(CATALOG)
ALADDIN, TOY, SUSPECTS, SHINING = (CATALOG.get(i) for i in "4123")


def test_short_title_moves_article():
    assert short_title("Usual Suspects, The (1995)") == "the usual suspects"


@pytest.mark.parametrize("reason", [
    "A musical animated comedy like Toy Story, which you liked.",
    "Another animated comedy for a Toy Story fan.",
])
def test_true_reasons_pass(reason):
    assert CHECK.problems(reason, ALADDIN, [TOY]) == []


@pytest.mark.parametrize("reason, problem", [
    ("A fun follow-up to The Usual Suspects.", "not in the history"),
    ("A horror comedy like Toy Story.", "Horror"),
    ("A 1977 classic like Toy Story.", "year 1977"),
    ('Because of the movie "The (1996)" you saw.', "quotes"),
    ("You liked Aladdin before, so watch it again.", "already liked"),
    ("Fun.", "too short"),
])
def test_invented_claims_are_caught(reason, problem):
    found = CHECK.problems(reason, ALADDIN, [TOY])
    assert any(problem in p for p in found), found


def test_clean_reason_keeps_first_sentence():
    assert clean_reason(' "Because: A fine film. And more text') == "A fine film."


def test_fallbacks_only_state_facts():
    assert fallback_reason(ALADDIN, [SHINING, TOY], None) == "Shares Animation and Comedy with Toy Story (1995), which you liked."
    assert fallback_reason(SHINING, [TOY], "something scary") == "Horror, close to your request."
    for reason in [fallback_reason(ALADDIN, [SHINING, TOY], None), fallback_reason(SUSPECTS, [SHINING], None, SHINING)]:
        assert CHECK.problems(reason, ALADDIN if "Toy" in reason else SUSPECTS, [SHINING, TOY]) == []


@pytest.mark.parametrize("reason, problem", [
    ("A fun animated comedy like Toy Story, which I loved.", "first person"),
    ("An animated comedy from the Disney vault.", "'Disney'"),
])
def test_first_person_and_unknown_names_are_caught(reason, problem):
    assert any(problem in p for p in CHECK.problems(reason, ALADDIN, [TOY]))


@pytest.mark.parametrize("reason, history", [
    ("A horror-themed horror movie, which you liked.", []),                 # query only: nothing was liked
    ("A chilling horror film that you watched and loved.", []),
    ("A horror classic, which you liked.", [TOY]),                         # names no history item
    ("A scary film, a favourite of yours like the ones you enjoyed.", [TOY, ALADDIN]),
])
def test_a_liked_claim_needs_a_named_history_item(reason, history):
    """Issue 12 #9: the "already liked" rule fired only when the reason named the item's own title."""
    found = CHECK.problems(reason, SHINING, history)
    assert any("liked something" in p for p in found), found


def test_a_liked_claim_naming_a_history_item_passes():
    assert CHECK.problems("A horror film for a fan of Toy Story, which you liked.", SHINING, [TOY]) == []
    assert CHECK.problems("Close to Toy Story (1995), which you liked.", SHINING, [TOY]) == []  # the full title


def test_fallback_without_history_claims_nothing_about_the_user():
    for item in [SHINING, Item("9", "Untitled", (), None)]:
        reason = fallback_reason(item, [], None)
        assert "you" not in reason.lower() and CHECK.problems(reason, item, []) == []


def test_clean_reason_is_fast_on_long_text_without_a_full_stop():
    start = time.perf_counter()
    assert len(clean_reason("word " * 200_000)) <= 240
    assert time.perf_counter() - start < 1.0


SHOP = Catalog([
    Item("m1", "Moroccanoil"), Item("m2", "MOROCCANOIL The Original Oil Treatment 100ml"),
    Item("b1", "Coastal Scents The Brush Guard, Variety Pack"),
    Item("s1", "SODIAL(R) 10 Pair Long Black False Eyelashes"), Item("s2", "SODIAL(R) False Eyelash Glue"),
])


@pytest.mark.parametrize("reason, item, liked", [
    ("Moroccanoil in its title, as you asked; because you liked Coastal Scents The Brush Guard.", "m2", "b1"),
    ("Because you liked Coastal Scents The Brush Guard; a title with MOROCCANOIL, as requested.", "m2", "b1"),
    ("Because you liked SODIAL(R) 10 Pair Long Black False Eyelashes; your request: False in its title.", "s2", "s1"),
])
def test_a_request_clause_naming_the_items_own_title_words_is_no_claim_about_another_item(reason, item, liked):
    """Beauty, 200 users (session 36): 11 served reasons of 1,990 were flagged only because a request word is also
    another item's whole title ("Moroccanoil") or the recommended item shares the liked item's brand; hand
    graders found them true. Another item's title that is words of the item's own title says nothing of the other
    item, and "liked" is looked for in the clause that says it, history titles aside."""
    check = ReasonChecker(SHOP)
    assert check.problems(reason, SHOP.get(item), [SHOP.get(liked)]) == []


def test_liking_the_recommended_item_or_naming_another_is_still_caught():
    check = ReasonChecker(SHOP)
    glue, lashes, guard = SHOP.get("s2"), SHOP.get("s1"), SHOP.get("b1")
    assert any("already liked" in p for p in check.problems("Because you liked SODIAL(R) False Eyelash Glue.", glue,
                                                             [guard]))
    assert any("not in the history" in p for p in check.problems(
        "A title with Moroccanoil, as you asked; because you liked Coastal Scents The Brush Guard.", lashes, [guard]))
