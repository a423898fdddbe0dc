"""The facts a reason may use: supported words, title matching, related history, bounded tokenizing."""

import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recgen.data import Catalog, Item
from recgen.reasons.facts import GENERIC_WORDS, ReasonFacts, names_title, similarity_threshold
from recgen.text import claim_words, snowball_stem

CATALOG = Catalog([
    Item("1", "Mrs. Doubtfire (1993)", ("Comedy",), 1993),
    Item("2", "Toy Story (1995)", ("Animation", "Children's", "Comedy"), 1995),
    Item("3", "Usual Suspects, The (1995)", ("Crime", "Thriller"), 1995),
    Item("4", "Star Trek III: The Search for Spock (1984)", ("Action", "Adventure", "Sci-Fi"), 1984),
    Item("5", "Eucerin Original Healing Soothing Repair Creme, 16-Ounce Jars (Pack of 2)"),
    Item("6", "Nivea Soft Moisturizing Creme", description="A light cream for face, hands and body."),
])
DOUBTFIRE, TOY, SUSPECTS, TREK, EUCERIN, NIVEA = (CATALOG.get(i) for i in "123456")
FACTS = ReasonFacts.for_item(CATALOG, DOUBTFIRE, [TOY, SUSPECTS])


def test_stemming_merges_inflections():
    assert snowball_stem("comedies") == snowball_stem("comedy")
    assert snowball_stem("animated") == snowball_stem("animation")
    assert FACTS.supports("comedies") and FACTS.supports("Comedy")


def test_claim_words_drop_stopwords_and_possessives():
    assert claim_words("A comedy for the children's sake, which you liked.") == ["comedy", "children", "sake",
                                                                                 "liked"]


@pytest.mark.parametrize("reason, unsupported", [
    ("A comedic, irreverent comedy about a cat-themed reality show.", ["irreverent", "cat", "themed", "reality",
                                                                      "show"]),
    ("Shares Comedy with Toy Story, which you liked.", []),
    ("A 1990s comedy like The Usual Suspects.", []),                  # the item's decade
    ("A 1996 Twister.", ["1996", "twister"]),
    ("A classic comedy.", ["classic"]),                               # evaluative: not generic on purpose
    ("A family comedy.", ["family"]),                                 # Toy Story's genre, but Toy Story not named
    ("A comedy for fans of the animated Toy Story.", []),             # named: its attributes back words
])
def test_unsupported_words(reason, unsupported):
    assert FACTS.unsupported(reason) == unsupported


def test_vocabulary_holds_history_attributes_and_generic_words():
    assert FACTS.supports("animated") and FACTS.supports("thriller")
    assert all(FACTS.supports(w) for w in ("recommend", "because", "similar", "enjoy", "fans", "film", "movie", "user"))
    assert not FACTS.supports("classic") and "classic" not in GENERIC_WORDS


def test_description_is_a_fact_only_when_there_is_one():
    bare = ReasonFacts.for_item(CATALOG, EUCERIN, [])
    assert bare.unsupported("Its description is close to Nivea.") == ["description", "nivea"]
    described = ReasonFacts.for_item(CATALOG, NIVEA, [EUCERIN])
    assert described.unsupported("Its description is close to Eucerin Original Healing Soothing Repair Creme.") == []
    assert described.unsupported("A light cream for your face.") == []


@pytest.mark.parametrize("text, title, named", [
    ("Fans of the usual suspects will like it.", "Usual Suspects, The (1995)", True),
    ("Like Usual Suspects, a crime film.", "Usual Suspects, The (1995)", True),
    ("A sequel to Star Trek III.", "Star Trek III: The Search for Spock (1984)", True),
    ("Like TOY STORY (1995).", "Toy Story (1995)", True),
    ("A toy for a story.", "Toy Story (1995)", False),
    ("It is great.", "It (1990)", False),                              # too short to match anywhere
    ("The user enjoys the comedy of In & Out.", "In & Out (1997)", True),  # only stopwords, but two of them
    ("Give them a try.", "Them! (1954)", False),                       # one stopword
])
def test_title_matching_is_tolerant(text, title, named):
    assert names_title(text, title) is named


def test_named_history_and_request():
    assert FACTS.named_history("Shares Comedy with Toy Story.") == [TOY]
    asked = ReasonFacts.for_item(CATALOG, DOUBTFIRE, [], "a funny comedy for the weekend")
    assert asked.names_request("A comedy, close to your request.")
    assert not asked.names_request("A film close to your request.")     # only generic words shared
    assert asked.supports("weekend") and asked.unsupported("A comedy for the weekend.") == []


def test_related_history_by_attribute_and_similarity():
    related = FACTS.related_history()
    assert [(r.item, r.shared) for r in related] == [(TOY, ("Comedy",))]
    emb = np.zeros((len(CATALOG), 2), dtype=np.float32)
    emb[:, 0] = 1.0
    emb[CATALOG.index_of("3")] = [0.0, 1.0]                            # Suspects: orthogonal to Doubtfire
    by_sim = ReasonFacts.for_item(CATALOG, DOUBTFIRE, [SUSPECTS]).related_history(emb, threshold=0.5)
    assert by_sim == []
    emb[CATALOG.index_of("3")] = [0.8, 0.6]                            # cosine 0.8
    by_sim = ReasonFacts.for_item(CATALOG, DOUBTFIRE, [SUSPECTS]).related_history(emb, threshold=0.5)
    assert [r.item for r in by_sim] == [SUSPECTS] and by_sim[0].similarity == pytest.approx(0.8)


def test_similarity_threshold_is_a_quantile_of_random_pairs():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(300, 16)).astype(np.float32)
    t90, t99 = similarity_threshold(emb, 0.90), similarity_threshold(emb, 0.99)
    assert 0 < t90 < t99 < 1
    assert similarity_threshold(emb, 0.90) == t90                       # seeded


def test_fact_lines_show_everything_a_reason_may_use():
    lines = ReasonFacts.for_item(CATALOG, NIVEA, [TOY], "soft cream").lines()
    assert lines[0].startswith("Recommended: Nivea Soft Moisturizing Creme — A light cream")
    assert lines[1] == "Liked: Toy Story (1995) [Animation, Children's, Comedy]"
    assert lines[2] == "Request: soft cream"


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=0, max_size=3000))
def test_tokenizer_and_check_are_bounded_on_any_text(text):
    started = time.perf_counter()
    FACTS.unsupported(text * 50)
    FACTS.named_history(text * 50)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize("text", ["a" * 200_000, "'" * 200_000, "x'" * 100_000, "( " * 100_000,
                                  "comedies " * 30_000, "\u00e9" * 100_000])
def test_hostile_inputs_finish_fast(text):
    started = time.perf_counter()
    FACTS.unsupported(text)
    claim_words(text)
    names_title(text, text)
    assert time.perf_counter() - started < 1.0
