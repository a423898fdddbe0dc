"""Client text is read in bounded time (issue 12 High #1): a 1 MB adversarial message once froze the whole
server for minutes (backtracking regexes on a reply line, holding the GIL). Each shape below took seconds to
hours before the fix; now the parsers are linear and capped, and the app answers (or rejects) within 1 s."""

from __future__ import annotations

import time

import pytest
from conftest import make_catalog

from recgen.chat.parser import MAX_TURN_CHARS, parse_turn
from recgen.chat.state import ChatContext, items_in_reply, reply_positions, state_from_messages

MB = 1_000_000

#: Shapes aimed at the old patterns: whitespace runs between a list marker and the end, repeated digits and
#: dots, nested quotes, spaced dashes, bracket soup, joining words, a genre followed by whitespace.
ADVERSARIAL = {
    "spaces": "1. a" + " " * MB + "b",
    "digits": "1" * MB,
    "dots": "1." * (MB // 2),
    "digit_dots": "1. 1." * (MB // 5),
    "nested_quotes": '1. "' * (MB // 4),
    "quotes": '"\u201c' * (MB // 2),
    "dashes": "1. a" + " -" * (MB // 2),
    "brackets": "1. a [item " * (MB // 11),
    "lines": "1. a  \u2014  b\n" * (MB // 12),
    "joining_words": "x " + "and " * (MB // 4) + "y",
    "genre_then_spaces": "horror" + " " * MB + "x",
    "negated_genres": "not " + "horror " * (MB // 7),
    "years": "between 1990 and " * (MB // 17),
}


@pytest.fixture(scope="module")
def context() -> ChatContext:
    return ChatContext.from_catalog(make_catalog())


#: Bounds are in this process's CPU seconds, not wall time: a loaded machine (two suites at once) stretched a
#: 0.3 s parse to 1.3 s of wall time, while the super-linear parsers these tests guard against took 30-78 s.
BOUND_S = 2.0


def _seconds(fn, *args) -> float:
    start = time.process_time()
    fn(*args)
    return time.process_time() - start


@pytest.mark.parametrize("shape", sorted(ADVERSARIAL))
def test_parsers_are_fast_on_a_1mb_adversarial_text(context, shape):
    text = ADVERSARIAL[shape]
    assert len(text) >= MB * 0.9
    assert _seconds(items_in_reply, text, context) < BOUND_S
    assert _seconds(parse_turn, text, context.vocab, ["1", "2"]) < BOUND_S
    messages = [{"role": "user", "content": "comedy"}, {"role": "assistant", "content": text},
                {"role": "user", "content": text}]
    assert _seconds(state_from_messages, messages, context) < BOUND_S


def test_a_long_turn_is_cut_with_a_note(context):
    turn = parse_turn("not horror " + "x " * MAX_TURN_CHARS, context.vocab)
    assert "Horror" in turn.exclude_genres
    assert any("first 10,000 characters" in note for note in turn.notes)


def test_reply_lines_are_still_read(context):
    reply = "Here are 2 picks:\n1. Synthetic Film 5 (1975) [item 5] \u2014 A reason.\n2.  Synthetic Film 7 (1977)  - fun"
    assert items_in_reply(reply, context) == ["5", "7"]
    assert reply_positions("1. not a title\n3. Synthetic Film 1 (1971) [item 1]", context) == [None, None, "1"]


# -- through the real app -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def client(tiny_recommender, dataset):
    from fastapi.testclient import TestClient

    from recgen.server.app import create_app
    from recgen.server.serving import ServerSettings

    # a body limit above 1 MB, so the adversarial text reaches the parsers instead of the 413 check
    settings = ServerSettings(max_body_bytes=3 * MB)
    with TestClient(create_app(tiny_recommender, dataset, settings)) as c:
        c.post("/v1/chat/completions", json={"model": "recgen", "messages": [{"role": "user", "content": "warm"}],
                                             "recgen": {"reasons": False}})  # loads models outside the timing
        yield c


@pytest.mark.parametrize("shape", ["spaces", "digit_dots", "nested_quotes", "brackets", "lines"])
def test_app_answers_a_1mb_adversarial_assistant_message_within_1s(client, shape):
    body = {"model": "recgen", "recgen": {"reasons": False, "k": 2},
            "messages": [{"role": "user", "content": "comedy"}, {"role": "assistant", "content": ADVERSARIAL[shape]},
                         {"role": "user", "content": "the first one"}]}
    start = time.process_time()
    response = client.post("/v1/chat/completions", json=body)
    seconds = time.process_time() - start
    assert response.status_code == 200, response.text
    assert seconds < BOUND_S, f"{shape}: {seconds:.2f} s"


@pytest.mark.parametrize("shape", ["spaces", "genre_then_spaces", "joining_words"])
def test_app_rejects_a_1mb_user_message_within_1s(client, shape):
    body = {"model": "recgen", "messages": [{"role": "user", "content": ADVERSARIAL[shape]}]}
    start = time.process_time()
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400 and "message_too_long" in response.text
    assert time.process_time() - start < BOUND_S


def test_app_answers_a_user_message_at_the_length_limit_within_1s(client):
    """4,000 characters (the default per-message limit) of "horror" + spaces took minutes before (cubic)."""
    body = {"model": "recgen", "recgen": {"reasons": False, "k": 2},
            "messages": [{"role": "user", "content": "horror" + " " * 3990 + "x"}]}
    start = time.process_time()
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert time.process_time() - start < BOUND_S
