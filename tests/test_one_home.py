"""One home per text helper and one reader of a request in words (issue 23): every helper is defined once
(the two stems and the two content-word readers under names that say which rule they are), and the chat and
the retriever's request filters read requests with the same parser, which is pinned here on its own."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from recgen.retrieval.request_parser import Unit, negation_units, prepare, read_units, scope, year_units
from recgen.text import (
    claim_words,
    join_names,
    plural_stem,
    request_remainder,
    snowball_stem,
    title_terms,
    turn_remainder,
    wanted_words,
)

RECGEN = Path(__file__).resolve().parents[1] / "recgen"

#: Each helper and the module that is its one home.
HOMES = {
    "plural_stem": "text.py", "snowball_stem": "text.py", "wanted_words": "text.py", "claim_words": "text.py",
    "tokens": "text.py", "norm": "text.py", "title_terms": "text.py", "request_remainder": "text.py",
    "turn_remainder": "text.py", "blank_spans": "text.py", "join_names": "text.py",
    "prepare": "retrieval/request_parser.py", "read_units": "retrieval/request_parser.py",
    "scope": "retrieval/request_parser.py", "year_units": "retrieval/request_parser.py",
    "negation_units": "retrieval/request_parser.py",
}
#: Word lists and the request token pattern, assigned once.
CONSTANTS = {"NEG_WORDS": "text.py", "REF_NEG_WORDS": "text.py", "FILLER": "text.py", "STOP": "text.py",
             "STOPWORDS": "text.py", "_TOKEN": "retrieval/request_parser.py"}
#: Names that meant two different things in two places; the meanings now have the names above.
AMBIGUOUS = ("stem", "_stem", "content_words", "_residual", "_title_words", "_join")


def _module_level(kind) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(RECGEN.rglob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if kind == "def" and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [node.name]
            elif kind == "assign" and isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name)]
            else:
                continue
            for name in names:
                found.setdefault(name, []).append(path.relative_to(RECGEN).as_posix())
    return found


def test_each_text_helper_and_parser_entry_point_has_one_definition():
    defs = _module_level("def")
    assert {name: defs.get(name) for name in HOMES} == {name: [home] for name, home in HOMES.items()}
    assert {name: defs[name] for name in AMBIGUOUS if name in defs} == {}


def test_each_word_list_is_assigned_once():
    assigned = _module_level("assign")
    assert {name: assigned.get(name) for name in CONSTANTS} == {name: [home] for name, home in CONSTANTS.items()}


@pytest.mark.parametrize("caller", ["chat/parser.py", "retrieval/request_constraints.py"])
def test_both_request_readers_delegate_to_the_one_parser(caller):
    tree = ast.parse((RECGEN / caller).read_text(encoding="utf-8"))
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and (node.module or "").endswith("request_parser") for alias in node.names}
    assert {"prepare", "read_units", "scope", "year_units", "negation_units"} <= imported
    assert "year_spans" not in (RECGEN / caller).read_text(encoding="utf-8")


# -- the shared parser -----------------------------------------------------------------------------------

def _scoped(query: str, rejecting=frozenset()):
    text, lower = prepare(query, 1000)
    genre_units = [Unit(u.start, u.end, "genre", u.value) for u in read_units(lower)  # the words, as genres
                   if u.value in {"horror", "comedy"}]
    units = read_units(lower, year_units(lower), negation_units(lower), genre_units)
    return [(s.unit.kind, s.unit.value, s.negated, s.rejected, lower[s.cue:s.unit.end] if s.rejected else None)
            for s in scope(units, rejecting)]


def test_a_negation_covers_every_phrase_until_a_content_word_or_punctuation():
    assert _scoped("not horror or comedy, drama") == [
        ("genre", "horror", True, True, "not horror"), ("genre", "comedy", True, True, "not horror or comedy"),
        ("word", ",", True, True, "not horror or comedy,"), ("word", "drama", False, False, None)]


def test_a_negation_phrase_and_a_year_end_as_a_word_does():
    assert _scoped("anything but horror from the 90s comedy") == [
        ("genre", "horror", True, True, "anything but horror"),
        ("year", (1990, 1999), True, True, "anything but horror from the 90s"),
        ("genre", "comedy", False, False, None)]


def test_a_rejecting_word_rejects_without_negating():
    assert _scoped("seen horror", rejecting={"seen"}) == [("genre", "horror", False, True, "seen horror")]
    assert _scoped("seen horror") == [("word", "seen", False, False, None), ("genre", "horror", False, False, None)]


def test_input_is_cut_and_whitespace_collapsed_before_reading():
    text, lower = prepare("Not   \u2019HORROR\u2019 " + "x" * 50, 20)
    assert (text, lower) == ("Not \u2019HORROR\u2019 xxxxx", "not 'horror' xxxxx")


# -- the text helpers: two rules where two are wanted ---------------------------------------------------

def test_the_two_stems_are_different_rules():
    assert plural_stem("conditioners") == "conditioner" and snowball_stem("conditioners") == "condition"
    assert plural_stem("glass") == "glass" and plural_stem("bus") == "bus"
    assert snowball_stem("comedies") == snowball_stem("comedy") and plural_stem("comedies") != plural_stem("comedy")


def test_the_two_content_word_readers_are_different_rules():
    text = "I'm after 2 funny movies, the children's kind"
    assert wanted_words(text) == ["after", "funny", "children's"]
    assert claim_words(text) == ["im", "2", "funny", "movies", "children", "kind"]  # a number can be a claim


def test_title_terms_keep_the_word_length_each_reader_asks_for():
    assert title_terms("Bags of Cream (2 Tubes)") == {"bag", "cream", "tube"}
    assert title_terms("Bags of Cream (2 Tubes)", 4) == {"bag", "cream", "tube"}  # "bags" has 4 letters
    assert title_terms("Bag of Cream") == {"bag", "cream"} and title_terms("Bag of Cream", 4) == {"cream"}


def test_the_two_remainders_tidy_differently():
    text = "more like horror, and comedy"
    spans = [(10, 16)]  # "horror"
    assert request_remainder(text, spans) == "more like , and comedy"
    assert turn_remainder(text, spans) == "comedy"
    assert request_remainder("the 90s", [(0, 7)]) is None and turn_remainder("and the", []) is None


def test_names_join_as_a_sentence_lists_them():
    assert [join_names(n) for n in ([], ["A"], ["A", "B"], ("A", "B", "C"))] == ["", "A", "A and B", "A, B and C"]
