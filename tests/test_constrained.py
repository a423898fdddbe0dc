"""Constrained reasons: only the words of a prompt's vocabulary can be written (transformers, vLLM engine and
server requests), checked with the real SmolLM2 tokenizer and a tiny random LM (which, free, writes any token)."""

import re
from dataclasses import replace

import pytest

from recgen.lm import vllm_requests as vr
from recgen.lm.constrained import AllowedTokens, WordVocabulary
from recgen.lm.constraint import Choice, Vocabulary
from recgen.lm.logits import AllowedTokensProcessor
from recgen.lm.prompt import ChatPrompt
from recgen.lm.vocabulary import vocabulary_of, vocabulary_regex, word_forms

VOCAB = ["Shares", "Drama", "with", "Alien", "1979", "which", "you", "liked", "a", "the", "is", "it", "pick", "like"]


def _prompt(vocabulary=None, text="Recommended: Aliens. Write the reason."):
    prompt = ChatPrompt([{"role": "system", "content": "You explain recommendations."},
                         {"role": "user", "content": text}], "Reason:")
    if vocabulary is not None:
        prompt = replace(prompt, constraint=Vocabulary(vocabulary))
    return prompt


def _words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9']+", text)


def _allowed_forms(vocabulary):
    return {f for w in vocabulary for f in word_forms(w)}


@pytest.fixture(scope="module")
def tokenizer(smollm_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm_tokenizer_dir)


def test_allowed_ids_hold_the_words_with_and_without_space_and_end_of_turn(tokenizer):
    allowed = AllowedTokens(tokenizer, {tokenizer.eos_token_id})
    ids = set(allowed.ids_for(["Drama", "Alien"]))
    for text in (" Drama", "Drama", " drama", " Alien", "."):
        assert set(tokenizer(text, add_special_tokens=False)["input_ids"]) <= ids, text
    assert tokenizer.eos_token_id in ids
    assert not set(tokenizer(" Horror", add_special_tokens=False)["input_ids"]) <= ids


def test_word_check_stops_sub_words_recombining():
    words = WordVocabulary(["well", "liked", "1979", "Alien"])
    assert words.accepts("", " Alien") and words.accepts("A fine Ali", "en")
    assert words.accepts("well", "-") and words.accepts("", " lik")
    assert not words.accepts("It is well-res", "oned")  # "resoned" is no allowed word
    assert not words.accepts("Alien (197", "0")  # a year rebuilt from allowed digits
    assert words.accepts("Alien (197", "9")
    assert not words.accepts("Alien", "s ")  # a finished word must be a whole allowed word
    assert words.can_stop("Alien.") and not words.can_stop("Alien") and not words.can_stop("")  # a sentence, finished


def test_titles_are_written_whole_or_not_at_all():
    words = WordVocabulary(["Shares", "Action", "with", "which", "you", "liked", "the", "The"],
                           ["The Lost World: Jurassic Park (1997)"])
    text = "Shares Action with"
    assert words.accepts(text, " The") and words.accepts(text + " The", " Lost")
    assert not words.accepts(text, " Jurassic")  # no stitched "Jurassic Park (1997)"
    assert not words.accepts(text + " The Lost", ",") and not words.can_stop(text + " The Lost")  # no half title
    assert words.accepts(text + " The Lost World: Jurassic Park (1997)", ",")
    assert words.accepts(text + " The Lost World: Jurassic Park (1997), which", " you")
    assert words.accepts(text, " the")  # "the" alone stays a free word


def test_processor_masks_rows_independently():
    import torch

    processor = AllowedTokensProcessor([[1, 2], None])
    out = processor(None, torch.zeros((2, 5)))
    assert torch.isinf(out[0, [0, 3, 4]]).all() and (out[0, [1, 2]] == 0).all()
    assert (out[1] == 0).all()


def test_tiny_random_lm_writes_only_allowed_words(tiny_backend):
    other_vocab = ["Comedy", "fans", "of", "this", "pick", "for", "an", "and"]
    constrained, other = tiny_backend.generate_text([_prompt(VOCAB), _prompt(other_vocab)], 24)
    assert set(_words(constrained)) <= _allowed_forms(VOCAB), constrained
    assert set(_words(other)) <= _allowed_forms(other_vocab), other
    assert _words(constrained), "a constrained answer without words"


def test_constrained_rows_do_not_change_a_free_batch(tiny_backend):
    alone = tiny_backend.generate_text([_prompt()], 12)
    mixed = tiny_backend.generate_text([_prompt(), _prompt(VOCAB)], 12)
    assert mixed[0] == alone[0] or not alone[0]  # the free row is decoded as it would be alone


def test_vocabulary_is_read_from_the_prompts_constraint():
    assert vocabulary_of(_prompt()) is None
    assert vocabulary_of(_prompt(["a"])).words == ("a",)
    assert vocabulary_of(replace(_prompt(), constraint=Choice([" A."]))) is None  # another constraint


def test_server_grammar_accepts_fact_sentences_and_refuses_other_words():
    assert re.fullmatch(vocabulary_regex(["with", "liked"], ["Mrs. Doubtfire (1993)"]), " with Mrs. Doubtfire (1993) liked.")
    regex = vocabulary_regex(VOCAB + ["Sci", "Fi"])
    assert re.fullmatch(regex, " Shares Drama with Alien (1979), which you liked.")
    assert re.fullmatch(regex, " A Sci-Fi pick, like Alien (1979).")
    assert not re.fullmatch(regex, " A Horror pick, like Alien (1979).")
    assert not re.fullmatch(regex, " Shares Drama with Aliens.")


def test_server_request_carries_the_grammar():
    body = vr.build_chat_request(_prompt(VOCAB), "base", "text", max_tokens=32)
    assert body["structured_outputs"] == {"regex": vocabulary_regex(VOCAB)}
    assert "structured_outputs" not in vr.build_chat_request(_prompt(), "base", "text", max_tokens=32)
    standard, extra = vr.split_extra_body(body)
    assert "structured_outputs" in extra and "structured_outputs" not in standard


def test_vllm_engine_passes_the_transformers_allowed_ids(tokenizer, tiny_backend):
    from recgen.lm import vllm_engine as ve

    class RecordingLLM:
        calls = []

        def generate(self, inputs, params, lora_request=None, use_tqdm=True):
            self.calls.append(params)
            text = " Shares Drama with Alien."  # a completion carries its text and token ids, as vLLM's do
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            return [type("O", (), {"outputs": [type("C", (), {"text": text, "token_ids": ids})()]})()
                    for _ in params]

    backend = ve.VLLMBackend(RecordingLLM(), tokenizer, make_params=lambda spec: spec)
    assert backend.generate_text([_prompt(VOCAB), _prompt()], 16) == ["Shares Drama with Alien."] * 2
    constrained, free = RecordingLLM.calls[-1]
    assert constrained["allowed_token_ids"] == tiny_backend.allowed_tokens.ids_for(VOCAB)
    assert "allowed_token_ids" not in free


def test_a_constrained_reason_ends_at_its_first_full_stop_outside_titles(tokenizer):
    allowed = AllowedTokens(tokenizer, {tokenizer.eos_token_id})
    words = WordVocabulary(["Like", "Mrs", "Doubtfire", "a", "pick"], ["Mrs. Doubtfire (1993)"])
    processor = AllowedTokensProcessor([allowed.ids_for(["Like"])], [words], allowed.text, allowed.stop_ids)

    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    assert not processor.sentence_done(0, ids(" Like Mrs."))  # inside the title
    assert processor.sentence_done(0, ids(" Like Mrs. Doubtfire (1993)."))
    assert processor.sentence_done(0, ids(" A pick."))


def test_a_title_can_start_with_a_word_that_is_not_free():
    words = WordVocabulary(["Shares", "Comedy", "with"], ["McHale's Navy (1997)"])
    assert words.accepts("Shares Comedy with", " McHale") and words.accepts("Shares Comedy with McHale", "'s Navy")
    assert not words.accepts("Shares Comedy with Avople", "McHale")  # never inside another word
    assert not words.accepts("Shares Comedy with", " Navy")


def test_no_end_of_answer_part_way_through_a_title():
    words = WordVocabulary(["Shares", "Drama", "with"], ["Faster Pussycat! Kill! Kill! (1965)"])
    assert not words.can_stop("Shares Drama with Faster Pussycat!")
    assert words.can_stop("Shares Drama with Faster Pussycat! Kill! Kill! (1965).")


def test_a_title_begun_in_other_tokens_can_be_finished(tokenizer):
    """The allowed ids spell a title one way; when the model began it another way ("... La" of "Lacquer"), the
    word check still finds the rest outside them instead of ending the answer half-way ("Like Essie Nail La")."""
    import torch

    allowed = AllowedTokens(tokenizer, {tokenizer.eos_token_id})
    words = WordVocabulary(["Like", "which", "you", "liked"], ["Essie Nail Lacquer"])
    ids = allowed.ids_for(["Like", "which", "you", "liked"], ["Essie Nail Lacquer"])
    processor = AllowedTokensProcessor([ids], [words], allowed.text, allowed.stop_ids)
    written = tokenizer(" Like Essie Nail La", add_special_tokens=False)["input_ids"]
    rest = tokenizer("cquer", add_special_tokens=False)["input_ids"][0]
    assert rest not in ids  # not how the allowed ids spell it
    scores = torch.zeros((1, len(tokenizer)))
    scores[0, rest] = 5.0
    out = processor(torch.tensor([written]), scores)
    assert int(out[0].argmax()) == rest


def test_a_title_is_written_in_its_own_tokens(tokenizer):
    """A title is begun only in tokens it can be finished in: "Like Essie Nail La" (a token that is no part of
    how the title is spelt) used to end the answer half-way."""
    allowed = AllowedTokens(tokenizer, {tokenizer.eos_token_id})
    words = WordVocabulary(["Like"], ["Essie Nail Lacquer"], boundaries=allowed.boundaries)
    pieces = [allowed.text(i) for i in tokenizer(" Essie Nail Lacquer", add_special_tokens=False)["input_ids"]]
    text = "Like"
    for piece in pieces:
        assert words.accepts(text, piece), (text, piece)
        text += piece
    assert pieces[-2] == " Lac"  # SmolLM2 spells it " Lac" + "quer"
    assert not words.accepts("Like Essie Nail", " La")  # then no token finishes it
