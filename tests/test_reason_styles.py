"""Reason styles are registered classes looked up by name; prompts carry typed channels (labels, one
constraint, the adapter) that every stage sets and every backend reads."""

from dataclasses import replace
from typing import get_args

import pytest

from recgen.chat.state import ChatContext
from recgen.chat.turn import chat_turn
from recgen.config import PromptSettings
from recgen.errors import ConfigError
from recgen.lm.constraint import Choice, SentenceRules, Vocabulary
from recgen.lm.prompt import ChatPrompt
from recgen.reasons.styles import STYLES, style_for

MESSAGES = [{"role": "user", "content": "hi"}]


def test_every_configurable_style_is_registered_and_an_unknown_one_is_a_config_error():
    assert set(STYLES) == set(get_args(PromptSettings.model_fields["reasons"].annotation))
    with pytest.raises(ConfigError, match="unknown prompt.reasons style 'poem'; choose one of: free, facts"):
        style_for("poem")


def test_prompt_channels_are_checked():
    with pytest.raises(TypeError, match="Choice, Vocabulary or None"):
        ChatPrompt(MESSAGES, constraint={"choices": [" A."]})  # the old untyped meta form
    with pytest.raises(ValueError, match="labels .* or a constraint .*, not both"):
        ChatPrompt(MESSAGES, labels=["A"], constraint=Choice([" A."]))
    with pytest.raises(ValueError, match="at least one non-empty option"):
        Choice([])
    with pytest.raises(TypeError, match="not one string"):
        Vocabulary("word")
    with pytest.raises(TypeError, match="adapter must be a name"):
        ChatPrompt(MESSAGES, adapter=1)
    with pytest.raises(AttributeError):
        ChatPrompt(MESSAGES).adapter = "a"  # frozen: replace() re-checks the channels
    assert SentenceRules(once=frozenset({"Product"}), claim_subject="You") == \
        SentenceRules(once=frozenset({"product"}), claim_subject="you")


class Recording:
    """Passes every call to ``backend`` and keeps the prompts it was sent."""

    def __init__(self, backend):
        self.backend, self.prompts = backend, []

    def __getattr__(self, name):
        attr = getattr(self.backend, name)
        if name in ("score_labels", "generate_labels", "generate_text"):
            def call(prompts, *args):
                self.prompts.extend(prompts)
                return attr(prompts, *args)
            return call
        return attr


@pytest.fixture
def recording(tiny_recommender, monkeypatch):
    spy = Recording(tiny_recommender.pipeline.ranker.backend)
    monkeypatch.setattr(tiny_recommender.pipeline.ranker, "backend", spy)
    monkeypatch.setattr(tiny_recommender.pipeline.reasoner, "backend", spy)
    return spy


def test_the_requests_adapter_reaches_every_ranking_and_reason_prompt(tiny_recommender, recording, dataset):
    history = list(dataset.sequences[sorted(dataset.sequences)[0]][:3])
    tiny_recommender.recommend(history, k=3, mode="generate", adapter="base")
    assert {p.adapter for p in recording.prompts} == {"base"}
    assert any(p.labels for p in recording.prompts) and any(not p.labels for p in recording.prompts)
    recording.prompts.clear()
    tiny_recommender.recommend(history, k=3, mode="generate")
    assert recording.prompts and {p.adapter for p in recording.prompts} == {None}


def test_a_chat_turns_adapter_reaches_the_lm(tiny_recommender, recording, dataset):
    """The chat server picks an adapter by the OpenAI ``model``; it travels with the prompts (it used to be set
    in a context variable that the recommender then reset, so the LM never saw it)."""
    history = list(dataset.sequences[sorted(dataset.sequences)[0]][:3])
    context = ChatContext.from_catalog(tiny_recommender.catalog)
    chat_turn(tiny_recommender, context, [{"role": "user", "content": "something new"}], history=history, k=3,
              mode="generate", adapter="base")
    assert recording.prompts and {p.adapter for p in recording.prompts} == {"base"}


def test_a_styles_constraint_is_a_typed_channel(dataset):
    from recgen.reasons.reasoner import Reasoner

    seen = Recording(None)
    seen.backend = type("Echo", (), {"generate_text": lambda self, prompts, n: ["x"] * len(prompts)})()
    catalog = dataset.catalog
    items = [item.item_id for item in list(catalog)[:2]]
    for style, kind in (("free", type(None)), ("facts", type(None)), ("grounded", Vocabulary), ("grammar", Choice)):
        seen.prompts.clear()
        Reasoner(catalog, seen, PromptSettings(reasons=style)).explain(items[:1], None, items[1:], adapter="a")
        assert [type(p.constraint) for p in seen.prompts] == [kind] and seen.prompts[0].adapter == "a"
        assert replace(seen.prompts[0], adapter=None).adapter is None
