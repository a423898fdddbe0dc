"""Issue 26 item 5: titles as people read them, reasons tied to the request, lists that do not repeat
themselves, likeness only on evidence, and request words nothing used reported back."""

from __future__ import annotations

import json

from recgen.data.catalog import Catalog, Item
from recgen.reasons.facts import short_name
from recgen.reasons.grounding import display_title
from recgen.text import plain_title


def test_titles_are_decoded_once_at_the_data_boundary():
    assert plain_title("Tom Clancy&rsquo;s Ghost Recon &amp; More") == "Tom Clancy\u2019s Ghost Recon & More"
    assert plain_title("Rock &amp;amp; Roll  Racing ") == "Rock & Roll Racing"  # escaped twice
    assert plain_title("AT&T 5 < 6") == "AT&T 5 < 6"  # no entity: unchanged
    row = {"item_id": "g1", "title": "Ratchet &amp; Clank&trade;", "genres": "Action &amp; Adventure"}
    item = Catalog.from_jsonl_text(json.dumps(row) + "\n", "items.jsonl").get("g1")
    assert item.title == "Ratchet & Clank\u2122" and item.genres == ("Action & Adventure",)


def test_names_are_never_cut_inside():
    title = "Scooby-Doo and the Haunting of Castle Mallow - Nintendo DS"
    assert short_name(title) == "Scooby-Doo and the Haunting of Castle Mallow"
    assert display_title(title) == "Scooby-Doo and the Haunting of Castle Mallow"
    run_on = "Alpha Beta Gamma Delta Epsilon Zeta Eta Theta Iota Kappa Lambda Mu Nu Xi Omicron Pi Rho Sigma Tau"
    cut = short_name(run_on)  # no separator and too long to write whole: cut at a word, never inside one
    assert len(cut) <= 40 and run_on.startswith(cut) and run_on[len(cut)] == " "


# -- reasons of one list ---------------------------------------------------------------------------------

from test_reasons_grounded import FILMS, _eval_ok  # noqa: E402

from recgen.config import RecgenConfig  # noqa: E402
from recgen.evaluation.reason_metrics import distinct_n  # noqa: E402
from recgen.reasons.asked import (  # noqa: E402
    ALONE,
    FORMS,
    IN_TITLE,
    Asked,
    asked_of,
    request_forms,
    with_request,
    with_requests,
    without_asked,
)
from recgen.reasons.grammar import LIKENESS, WEAK, reason_choices  # noqa: E402
from recgen.reasons.grounding import select_facts  # noqa: E402
from recgen.reasons.reasoner import Reasoner  # noqa: E402
from recgen.reasons.variety import distinct, opening, spread  # noqa: E402
from recgen.retrieval.request_constraints import RequestReader  # noqa: E402

GAMES = Catalog([
    Item("g1", "Project Gotham Racing 2 - Xbox"),
    Item("g2", "Mad Catz Racing Wheel for Xbox 360"),
    Item("g3", "Batman: Arkham Origins - Xbox 360"),
    Item("g4", "Ghostbusters: The Video Game - Playstation 3"),
    Item("g5", "Lord of the Rings: War in the North - Playstation 3"),
    Item("g6", "Forza Motorsport 4 - Xbox 360"),
    *(Item(f"x{n}", f"Filler Title Number {n} Deluxe") for n in range(30)),
])
MANY = Catalog([*FILMS, *(Item(f"f{n}", f"Action Film {n} (199{n % 10})", ("Action", "Sci-Fi"), 1990 + n % 10)
                          for n in range(12))])


def test_a_list_never_repeats_a_sentence_and_varies_its_openings(tiny_backend):
    settings = RecgenConfig().prompt.model_copy(update={"reasons": "grammar"})
    reasoner = Reasoner(MANY, tiny_backend, settings)
    listed = [f"f{n}" for n in range(10)]
    out = reasoner.explain(["4", "7", "8"], None, listed)  # Action and Sci-Fi films all, like every item
    texts = [t for t, _ in out]
    assert len({" ".join(t.lower().split()) for t in texts}) == len(texts), texts
    assert len({opening(t) for t in texts}) >= 5, texts
    assert distinct_n(texts, 2) >= 0.45, texts  # 0.36 before spreading sentences and liked items (3 titles)
    assert reasoner.explain(["4", "7", "8"], None, listed) == out  # deterministic
    history = [MANY.get(i) for i in ("4", "7", "8")]
    for item_id, text in zip(listed, texts):
        assert _eval_ok(MANY, MANY.get(item_id), history, None, text) == ([], []), text


def test_spread_gives_each_item_sentences_no_earlier_item_has():
    same = (" Because you liked X.", " Since you liked X, try this one.", " Shares Action with X, which you liked.",
            " Another Action pick, like X.", " You liked X, so try this one.", " Suggested because you liked X.")
    out = spread([same] * 4 + [None])
    assert len(out[0]) == len(out[1]) == 3 and not set(out[0]) & set(out[1]) and out[4] is None
    assert {opening(s) for s in out[0]} & {opening(s) for s in out[1]} <= {"because you"}  # openings spread
    assert len(out[2]) == 1  # nothing new left to say: its first sentence only
    assert distinct([("A.", "model"), ("A.", "model")], [(" A.",), (" A.", " B.")]) == [("A.", "model"),
                                                                                        ("B.", "fallback")]


def test_no_sentence_calls_two_items_alike_and_shared_facts_are_stated():
    games = [GAMES.get("g4"), GAMES.get("g5")]
    facts = select_facts(games[0], games[1:], None)  # nothing shared, no co-purchase
    assert not any(LIKENESS.search(s) for s in reason_choices(facts, 60))
    fans = reason_choices(facts, 60, co_liked=True)  # two users had both: said as such, never "close"
    assert any(s.startswith(" Fans of") for s in fans) and not any(LIKENESS.search(s) for s in fans)
    lost_world, jurassic = FILMS.get("7"), FILMS.get("8")  # the same genres: what they share is stated
    said = reason_choices(select_facts(lost_world, [jurassic], None), 60, co_liked=True)
    assert not any(LIKENESS.search(s) for s in said) and any(" as is Jurassic Park" in s for s in said), said
    drama = Catalog([Item("d", "A Drama (1957)", ("Drama",), 1957), Item("g", "Get Shorty (1995)",
                                                                        ("Action", "Comedy", "Drama"), 1995)])
    asked = select_facts(drama.get("d"), [drama.get("g")], "a 50s drama")  # its only genre requested
    assert not any(s.startswith((" A pick,", " A pick for fans")) for s in reason_choices(asked, 60))
    crime = Catalog([Item("c", "Crime Story (1996)", ("Crime",), 1996), Item("a", "Action Story (1996)", ("Action",), 1996)])
    apart = select_facts(crime.get("c"), [crime.get("a")], None)  # no shared genre: no "for fans of" without co-likes
    assert not any("for fans of" in s for s in reason_choices(apart, 60))
    assert any("for fans of" in s for s in reason_choices(apart, 60, co_liked=True))


def test_reasons_name_what_of_the_request_the_item_meets():
    reader = RequestReader(GAMES)
    query = "a racing game"
    wheel, batman = GAMES.get("g2"), GAMES.get("g3")
    said = asked_of(wheel, query, reader.read(query))
    assert said.what() == "Racing in its title"  # not "a racing game": a wheel is no game
    assert with_request("Because you liked Batman: Arkham Origins.", said, 0) == \
        "Racing in its title, as you asked; because you liked Batman: Arkham Origins."
    assert not asked_of(batman, query, reader.read(query))  # meets nothing asked: no request clause
    films = RequestReader(FILMS)
    comedy = asked_of(FILMS.get("5"), "a 90s comedy", films.read("a 90s comedy"))
    assert comedy.what() == "Comedy from 1996"
    forms = {with_request("Because you liked Alien (1979).", comedy, n) for n in range(4)}
    assert len(forms) == 4 and len({opening(f) for f in forms}) == 2
    tail = with_request("Since you liked Alien (1979), try this one.", comedy, 0)
    assert tail == "Comedy from 1996, as you asked; since you liked Alien (1979), try this one."
    sentences = (" If you liked Heat, this is also Comedy.", " Because you liked Heat.")
    assert without_asked(sentences, comedy) == (" Because you liked Heat.",)
    assert without_asked(sentences[:1], comedy) == sentences[:1]  # nothing else to say: kept


def test_served_reasons_with_a_request_say_the_request_and_stay_grounded(tiny_backend):
    settings = RecgenConfig().prompt.model_copy(update={"reasons": "grammar"})
    reasoner = Reasoner(MANY, tiny_backend, settings)
    listed = [f"f{n}" for n in range(6, 10)] + ["6"]
    out = reasoner.explain(["4", "2"], "a 90s action film", listed)
    for item_id, (text, _) in zip(listed, out):
        item = MANY.get(item_id)
        assert "Action" in text and str(item.year) in text and any(w in text.lower() for w in ("ask", "request", "want", "search", "looking")), text
        assert text.count("Action") == 1, text  # the request clause says it; the rest of the reason does not
        history = [MANY.get("4"), MANY.get("2")]
        assert _eval_ok(MANY, item, history, "a 90s action film", text) == ([], []), text


def test_a_list_all_about_one_liked_item_still_never_repeats(tiny_backend):
    """Title-only items that all come back to one liked item (no shared attribute, no co-interaction): each gets a
    sentence no other item of the list got (with six such sentences, 2 of 16 Beauty lists repeated one)."""
    shop = Catalog([Item("liked", "Dual Sided Back Scrubber"),
                    *(Item(f"p{n}", f"Unrelated Product Number {n} Deluxe") for n in range(10))])
    settings = RecgenConfig().prompt.model_copy(update={"reasons": "grammar"})
    out = Reasoner(shop, tiny_backend, settings).explain(["liked"], None, [f"p{n}" for n in range(10)])
    texts = [" ".join(t.lower().split()) for t, _ in out]
    assert len(set(texts)) == 10 and all("back scrubber" in t for t in texts), texts


def test_a_list_names_different_liked_items_but_never_trades_a_related_one_for_an_unrelated_one():
    """Title-only items (Beauty): one liked item named in 8 of 10 reasons kept distinct-2 per list at 0.30-0.40.
    Liked items as related to the item as the one named already take turns; a related liked item (shared genre,
    or cosine above the catalog's related threshold) is never given up for an unrelated one."""
    shop = Catalog([*(Item(f"l{n}", f"Liked Product Number {n} Deluxe") for n in range(3)),
                    *(Item(f"p{n}", f"Unrelated Product Number {n} Deluxe") for n in range(6))])
    liked = [shop.get(f"l{n}") for n in range(3)]
    near = {"l0": 0.3, "l1": 0.2, "l2": 0.1}  # l0 the closest to every item

    def pick(related, n_items=6):
        named: dict[str, int] = {}
        out = []
        for n in range(n_items):
            facts = select_facts(shop.get(f"p{n}"), liked, None, lambda i, p: (0.0, near[p.item_id]), named, related)
            named[facts.related.item_id] = named.get(facts.related.item_id, 0) + 1
            out.append(facts.related.item_id)
        return out

    assert pick(lambda i, p: False) == ["l0", "l1", "l2"] * 2  # none related: turns, closest first
    assert pick(lambda i, p: True) == ["l0", "l1", "l2"] * 2  # all related alike: turns too
    assert pick(lambda i, p: p.item_id == "l2") == ["l2"] * 6  # only the farthest is related: always it
    assert pick(lambda i, p: p.item_id != "l0") == ["l1", "l2"] * 3  # two related: they take turns
    assert pick(None) == ["l0", "l1", "l2"] * 2





def test_names_end_where_a_shop_would_print_them():
    assert display_title("TIGI Bed Head Ego Boost 8 oz.") == "TIGI Bed Head Ego Boost 8 oz"  # no "oz.."
    cut = "Cetaphil Moisturizing Cream for Dry, Sensitive Skin, 16 Ounce Jar, Fragrance Free, Pack of Two"
    assert short_name(cut) == "Cetaphil Moisturizing Cream"  # not "... Cream for Dry"
    kept = "Citrus Shampoo Deluxe Formula for Men, 8 oz bottle, made with the finest citrus oils"
    assert short_name(kept) == "Citrus Shampoo Deluxe Formula for Men"  # a size after the comma: the phrase is whole
    assert display_title("Mrs. Doubtfire (1993)") == "Mrs. Doubtfire (1993)"
    assert display_title("I.Q. (1994)") == "I.Q. (1994)" and display_title("Made in the U.S.A.") == "Made in the U.S.A."


def test_request_clauses_vary_over_a_list_and_still_state_the_request():
    from recgen.evaluation.reason_metrics import states_asked

    reader = RequestReader(GAMES)
    said = asked_of(GAMES.get("g2"), "a racing game", reader.read("a racing game"))
    texts = [with_request("Because you liked Batman: Arkham Origins.", said, n) for n in range(10)]
    assert len(set(texts)) == 10 and all(states_asked(t, said) for t in texts), texts
    assert len({t.replace("Because you liked Batman: Arkham Origins", "") for t in texts}) >= 6


def test_fans_of_a_liked_item_only_when_two_users_had_both():
    """v5 hand grades: "A Drama and Mystery pick for fans of Jack" (one shared genre, no co-likes): partly true.
    v3 hand grades: "Comedy from 1994, as you asked; a Romance pick for fans of The Flintstones" (the two share
    Comedy, which the request clause says; Romance is not The Flintstones'): partly true. And a possessive title
    word meets the request ("Dr. Bronner's" for "a bronner" went unsaid)."""
    romcom = Catalog([Item("iq", "I.Q. (1994)", ("Comedy", "Romance"), 1994),
                      Item("fl", "Flintstones, The (1994)", ("Children's", "Comedy"), 1994)])
    asked = select_facts(romcom.get("iq"), [romcom.get("fl")], "a 90s comedy film")
    assert not any("for fans of" in s for s in reason_choices(asked, 60))
    assert any("for fans of" in s for s in reason_choices(asked, 60, co_liked=True))  # two users had both
    plain = select_facts(romcom.get("iq"), [romcom.get("fl")], None)  # Comedy named and shared: not enough (v5)
    assert " A Comedy and Romance pick for fans of The Flintstones (1994)." not in reason_choices(plain, 60)
    assert " A Comedy and Romance pick for fans of The Flintstones (1994)." in reason_choices(plain, 60, co_liked=True)
    shop = Catalog([Item("b", "Dr. Bronner's Citrus Hair Conditioning Rinse, 8 fl oz"), Item("c", "Other Rinse Deluxe")])
    said = asked_of(shop.get("b"), "a bronner", RequestReader(shop).read("a bronner"))
    assert said.title_words == ("Bronner's",)


def test_a_request_list_words_its_clause_apart_from_the_reasons_before_it():
    """v3d: Beauty with a one-word request stayed at distinct-2 per list 0.4945 (target 0.5): the clause is in all
    ten reasons, and by position "as you asked" and "in its title" came back every few items. Each clause is now
    worded with the fewest word pairs the list has said (16 forms x 5 ways to say title words): deterministic,
    every reason still states the request and keeps its own sentence, and no clause is said twice."""
    from recgen.evaluation.reason_metrics import states_asked

    said = asked_of(GAMES.get("g2"), "a racing game", RequestReader(GAMES).read("a racing game"))
    bases = [s.format(related="Batman: Arkham Origins") for s in WEAK[:10]]
    positional = [with_request(b, said, n) for n, b in enumerate(bases)]
    joined = with_requests(bases, [said] * 10)
    assert joined == with_requests(bases, [said] * 10)  # deterministic
    assert all(states_asked(t, said) for t in joined), joined
    assert all(b.rstrip(".").lower()[1:] in t.lower() for b, t in zip(bases, joined)), joined  # its own sentence
    clauses = [t.lower().replace(b.rstrip(".").lower(), "") for b, t in zip(bases, joined)]
    assert len(set(clauses)) == 10, clauses
    assert distinct_n(joined, 2) >= distinct_n(positional, 2) + 0.03, (distinct_n(joined, 2), distinct_n(positional, 2))
    alone = with_requests([None] * 4, [said] * 4)  # nothing but the request to say: the clause alone, varied
    assert len(set(alone)) == 4 and all(states_asked(t, said) for t in alone), alone
    assert with_requests(["Because you liked X.", None], [Asked(), Asked()]) == ["Because you liked X.", ""]


def test_every_request_clause_form_is_grounded_and_checked():
    """The clause forms add only generic and stop words: every form, every way to say title words, alone or
    beside a basis sentence, passes the evaluation's support measure and the reason checker, and reads as a
    finished sentence ("... as you were looking for." was measured as cut off), and none uses a likeness word
    ("to match your search" would read as "a close match" to the hand sample's likeness filter)."""
    from recgen.evaluation.reason_metrics import is_truncated, repeated_ngrams

    assert len(FORMS) == 16 and len(ALONE) == 8 and len(IN_TITLE) == 5
    history = [GAMES.get("g3")]
    wheel = GAMES.get("g2")
    said = asked_of(wheel, "a racing game", RequestReader(GAMES).read("a racing game"))
    texts = request_forms("Because you liked Batman: Arkham Origins.", said) + request_forms(None, said)
    assert len(texts) == 16 * 5 + 8 * 5
    for text in texts:
        assert _eval_ok(GAMES, wheel, history, "a racing game", text) == ([], []), text
        assert not is_truncated(text) and not repeated_ngrams(text, titles=[wheel.title]), text
        assert not LIKENESS.search(text.replace("Batman: Arkham Origins", "")), text
    comedy = asked_of(FILMS.get("5"), "a 90s comedy", RequestReader(FILMS).read("a 90s comedy"))
    films = request_forms("Because you liked Alien (1979).", comedy) + request_forms(None, comedy)
    assert len(films) == 16 + 8  # no title words: one way each
    for text in films:
        assert _eval_ok(FILMS, FILMS.get("5"), [FILMS.get("2")], "a 90s comedy", text) == ([], []), text
        assert not is_truncated(text) and not repeated_ngrams(text, titles=[]), text


def test_the_year_is_said_as_asked_only_when_it_meets_the_request():
    """v4 hand grades: a list for "a 70s romance film" filled with closest items (too few 70s romances) said "it fits
    what you asked for: from 1992" of a 1992 crime film: false. The year is a request fact only inside the bounds."""
    from recgen.evaluation.reason_metrics import states_asked

    films = Catalog([Item("r", "Reservoir Dogs (1992)", ("Crime", "Thriller"), 1992),
                     Item("s", "Shawshank Redemption, The (1994)", ("Drama",), 1994),
                     Item("l", "Love Story (1970)", ("Romance",), 1970), Item("a", "Annie Hall (1977)", ("Comedy", "Romance"), 1977)])
    reader = RequestReader(films)
    assert not asked_of(films.get("r"), "a 70s romance film", reader.read("a 70s romance film"))  # meets nothing
    assert with_requests(["Because you liked Heat."], [asked_of(films.get("r"), "a 70s romance film",
                                                                 reader.read("a 70s romance film"))]) == ["Because you liked Heat."]
    drama = asked_of(films.get("s"), "a 70s drama", reader.read("a 70s drama"))
    assert drama.genres == ("Drama",) and drama.year is None and drama.what() == "Drama"
    inside = asked_of(films.get("a"), "a 70s romance film", reader.read("a 70s romance film"))
    assert inside.what() == "Romance from 1977" and states_asked(with_request("Because you liked Heat.", inside, 0), inside)
    later = asked_of(films.get("s"), "a drama from after 1990", reader.read("a drama from after 1990"))
    assert later.year == 1994  # one bound: the year meets it


def test_no_general_likeness_even_between_items_of_the_same_genres():
    """v4 hand grades (ml-100k): "A close match for Leaving Las Vegas (1995)" of Chasing Amy and "just like Vampire in
    Brooklyn (1995)" of Tin Cup, both pairs the same genres, read overstated; v5: "Much like Sense and Sensibility
    (1995), as both are Drama and Romance" of Jerry Maguire too, though it said in what. The catalog supports
    likeness only in what two items share, so that is what a reason says."""
    films = Catalog([Item("a", "Chasing Amy (1997)", ("Drama", "Romance"), 1997),
                     Item("l", "Leaving Las Vegas (1995)", ("Drama", "Romance"), 1995)])
    facts = select_facts(films.get("a"), [films.get("l")], None)
    for co_liked in (False, True):
        said = reason_choices(facts, 60, co_liked=co_liked)
        assert not any(LIKENESS.search(s) for s in said), said
        assert " Like Leaving Las Vegas (1995), which you liked, it is Drama and Romance." in said
        for text in said:
            assert _eval_ok(films, films.get("a"), [films.get("l")], None, text.strip()) == ([], []), text


def test_a_title_word_asked_for_is_said_once_in_any_number():
    """v4 Beauty: "a title with Glitter and Glitters" (both forms in the title) was counted as a repetition."""
    shop = Catalog([Item("g", "Glitter Nail Polish with Glitters, Silver"), Item("o", "Other Polish Deluxe")])
    said = asked_of(shop.get("g"), "a glitter", RequestReader(shop).read("a glitter"))
    assert said.title_words == ("Glitter",)
