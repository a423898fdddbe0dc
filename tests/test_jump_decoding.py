"""Jump-forward decoding of choice prompts (grammar reasons): the model is asked only where the choices branch,
every forced run of tokens is appended in one step, and greedy writes the same sentence as token by token.

The real-model check (SmolLM2, the served grammar prompts of ml-100k users) is here for transformers and in
tests/test_vllm_real.py for vLLM."""

from __future__ import annotations

from dataclasses import replace

import pytest
from jump_cases import grammar_prompts, trie_steps
from test_constrained import _prompt

from recgen.lm.choices import ChoiceTrie
from recgen.lm.constraint import Choice


def test_forced_runs_stop_at_branches_and_ends():
    trie = ChoiceTrie([[1, 2, 3, 7], [1, 2, 4], [1, 2, 4, 5, 6], [9]])
    assert trie.forced([]) == []                # 1 or 9: the model chooses
    assert trie.forced([1]) == [2]              # then 3 or 4
    assert trie.forced([1, 2, 3]) == [7]        # to the end of the choice
    assert trie.forced([1, 2, 4]) == [5, 6]     # a whole choice that starts another goes on, as before
    assert trie.forced([1, 2, 3, 7]) == [] and trie.forced([8]) == []
    assert trie.finished([1, 2, 3, 7]) and trie.finished([9]) and trie.finished([1, 2, 4, 5, 6])
    assert not trie.finished([1, 2, 4]) and not trie.finished([1, 2])


def test_steps_count_one_per_token_or_one_per_branch():
    trie = ChoiceTrie([[1, 2, 3, 7], [1, 2, 4], [1, 2, 4, 5, 6], [9]])
    assert trie.steps([1, 2, 3, 7]) == (4, 2)       # prefill picks 1; asked once more after [1, 2]
    assert trie.steps([9]) == (1, 1)
    assert ChoiceTrie([[5, 6, 7]]).steps([5, 6, 7]) == (3, 1)  # one choice: the prefill only


def test_jumping_writes_the_same_choices_in_fewer_steps_beside_free_rows(tiny_backend):
    """A tiny random LM (near-tied logits, the hardest case for equal picks) over a batch mixing choice rows and
    a free row: jump-forward writes exactly what token-by-token writes, in fewer forward passes."""
    choices = [" Close to Alien (1979), which you liked.", " Close to Alien (1979).", " Shares Sci-Fi with Alien."]
    other = [" Because you liked Star Wars (1977).", " Similar to Star Wars (1977)."]
    prompts = [replace(_prompt(), constraint=Choice(choices)), replace(_prompt(), constraint=Choice(other)), _prompt()]
    out, steps = {}, {}
    for jump in (False, True):
        tiny_backend.jump_forward = jump
        try:
            out[jump] = tiny_backend.generate_text(prompts, 64)
            steps[jump] = tiny_backend.last_steps
        finally:
            tiny_backend.jump_forward = True
    assert out[True] == out[False]
    assert " " + out[True][0] in choices and " " + out[True][1] in other
    assert steps[True] == steps[False]  # the free row sets the pace
    out_jump = tiny_backend.generate_text(prompts[:2], 64)
    jump_steps = tiny_backend.last_steps
    tiny_backend.jump_forward = False
    try:
        assert tiny_backend.generate_text(prompts[:2], 64) == out_jump
        assert jump_steps < tiny_backend.last_steps / 2, (jump_steps, tiny_backend.last_steps)
    finally:
        tiny_backend.jump_forward = True


def test_a_token_budget_cuts_a_jump_as_it_cut_token_by_token(tiny_backend):
    prompts = [replace(_prompt(), constraint=Choice([" Close to Alien (1979), which you liked.", " Close to Alien."]))]
    for budget in (1, 3, 5):
        tiny_backend.jump_forward = False
        try:
            stepwise = tiny_backend.generate_text(prompts, budget)
        finally:
            tiny_backend.jump_forward = True
        assert tiny_backend.generate_text(prompts, budget) == stepwise


class _PickLargest:
    """A stand-in ``vllm.LLM`` whose model prefers the largest allowed token id; it keeps every request."""

    def __init__(self):
        self.requests: list = []

    def generate(self, inputs, params, lora_request=None, use_tqdm=True):
        from types import SimpleNamespace

        self.requests.append([(i["prompt_token_ids"], p) for i, p in zip(inputs, params)])
        return [SimpleNamespace(outputs=[SimpleNamespace(token_ids=[max(p["allowed_token_ids"])], text="")])
                for p in params]


def test_vllm_rounds_continue_prompt_and_written_tokens_and_ask_only_at_branches(smollm_tokenizer_dir):
    """The vLLM rounds send prompt + written tokens, ``max_tokens=1`` and the trie's allowed ids, once per branching
    token, and write what greedy over the trie writes (here: the largest id at every branch)."""
    from transformers import AutoTokenizer

    from recgen.lm.vllm_engine import VLLMBackend

    tokenizer = AutoTokenizer.from_pretrained(smollm_tokenizer_dir)
    choices = [" Close to Alien (1979), which you liked.", " Close to Alien (1979).", " Because you liked Alien."]
    prompt = replace(_prompt(), constraint=Choice(choices))
    llm = _PickLargest()
    backend = VLLMBackend(llm, tokenizer=tokenizer, make_params=lambda spec: spec)
    trie = ChoiceTrie.for_choices(tokenizer, choices)
    written: list[int] = []
    while not trie.finished(written):
        written.append(max(trie.allowed(written)))
    [text] = backend.generate_text([prompt], 64)
    assert text == tokenizer.decode(written).strip()
    head = backend.encode(prompt)
    asked = [n for n in range(len(written)) if len(trie.allowed(written[:n])) > 1]
    assert len(llm.requests) == backend.last_steps == len(asked) >= 1
    for (request,), n in zip(llm.requests, asked):
        ids, params = request
        assert ids == head + written[:n]
        assert params == {"max_tokens": 1, "temperature": 0.0, "allowed_token_ids": trie.allowed(written[:n])}
    assert backend.generate_text([prompt], 2) == [tokenizer.decode(written[:2]).strip()]  # the budget cuts a run


@pytest.mark.slow
def test_smollm2_writes_the_same_grammar_reasons_jumping(ml100k_dataset):
    """The served grammar prompts of 3 ml-100k users (10 items each, one batch per user as the reasoner sends
    them) through SmolLM2-135M in float32: the same sentences with and without jumping, in fewer model steps."""
    from recgen.config import LMSettings
    from recgen.errors import ModelLoadError
    from recgen.lm.transformers_backend import TransformersBackend

    try:
        backend = TransformersBackend.from_settings(LMSettings(threads=2))
    except ModelLoadError as exc:
        pytest.skip(f"the default LM is not converted yet (run `make setup` first): {exc}")
    batches, budget = grammar_prompts(ml100k_dataset, 3, 10)
    out, steps = {}, {}
    for jump in (False, True):
        backend.jump_forward = jump
        out[jump], steps[jump] = [], 0
        for batch in batches:
            out[jump] += backend.generate_text(batch, budget)
            steps[jump] += backend.last_steps
    prompts = [p for batch in batches for p in batch]
    before, after = trie_steps(backend.tokenizer, prompts, out[True])
    print(f"transformers: forward passes per batch of 10 {steps[False] / len(batches):.1f} -> "
          f"{steps[True] / len(batches):.1f}; per reason {before / len(prompts):.1f} -> {after / len(prompts):.1f}")
    assert len(prompts) == 30 and all(out[True])
    assert out[True] == out[False]  # float32, one batch each way: greedy picks the same at every branch
    assert steps[True] < steps[False] / 2 and after < before / 2
