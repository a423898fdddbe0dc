"""What a grammar reason costs to prefill: the prompt's per-item part is short (the instruction sits in the part a
list's prompts share), the transformers backend keeps the KV of recent prompt prefixes between calls (the system
prompt and worked example every user's reasons start with), and vLLM's KV blocks are small enough for one list's
rows to share cached blocks (tests/test_vllm_real.py checks the engine's own cache-hit counts).

Real model and prompts: SmolLM2-135M on the served grammar prompts of ml-100k users (tests/jump_cases.py)."""

from __future__ import annotations

import pytest
import torch
from jump_cases import grammar_prompts

from recgen.config import LMSettings
from recgen.lm.kv_memo import PrefixMemo
from recgen.lm.transformers_backend import common_prefix_length


def _layers(tokens: int, value: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    keys = torch.arange(tokens, dtype=torch.float32).reshape(1, 1, tokens, 1) + value
    return [(keys, keys + 0.5)]


def test_memo_gives_the_longest_start_every_head_shares_cut_to_it():
    memo = PrefixMemo(entries=2, min_reuse=3)
    memo.store(None, [1, 2, 3, 4, 5, 6], _layers(6, 0.0))
    memo.store(None, [1, 2, 3, 9, 9], _layers(5, 100.0))
    shared, layers = memo.lookup(None, [[1, 2, 3, 4, 5, 7], [1, 2, 3, 4, 8]])
    assert shared == 4 and layers[0][0].flatten().tolist() == [0.0, 1.0, 2.0, 3.0]  # the first entry, cut
    assert layers[0][1].flatten().tolist() == [0.5, 1.5, 2.5, 3.5]
    assert memo.lookup(None, [[1, 2, 7]]) == (0, [])           # under min_reuse: nothing worth a copy
    assert memo.lookup("adapter-a", [[1, 2, 3, 4, 5]]) == (0, [])  # other weights, other KV
    memo.store(None, [7, 7, 7, 7], _layers(4, 0.0))            # the least recently used ([1, 2, 3, 9, 9]) goes
    assert len(memo) == 2 and memo.lookup(None, [[1, 2, 3, 9, 9]])[0] == 3


def test_a_list_shares_the_instruction_and_each_item_adds_its_facts_only(ml100k_dataset, smollm_tokenizer_dir):
    """The per-item part of a served grammar prompt (after what one list's prompts share) holds the item's facts
    and the end of the turn, not the instruction: ~50 tokens (72 with the instruction after the facts)."""
    from transformers import AutoTokenizer

    from recgen.lm.backend import ChatTokenizing

    encoder = ChatTokenizing()
    encoder.tokenizer = AutoTokenizer.from_pretrained(smollm_tokenizer_dir)
    batches, _ = grammar_prompts(ml100k_dataset, 3, 10)
    own = []
    for batch in batches:
        rows = [encoder.encode(p) for p in batch]
        shared = min(common_prefix_length(rows[0], r) for r in rows[1:])
        assert "write one short sentence" in encoder.tokenizer.decode(rows[0][shared - 40:shared])
        own += [len(r) - shared for r in rows]
    assert sum(own) / len(own) < 60, own


@pytest.mark.slow
def test_smollm2_reuses_the_shared_start_across_users_and_writes_the_same_reasons(ml100k_dataset):
    """Three users' lists one after another, then merged into one call (as the scheduler does): with the memo the
    system prompt and worked example are run once, later calls copy them, and every sentence is the one written
    without the memo (float32)."""
    from recgen.errors import ModelLoadError
    from recgen.lm.transformers_backend import TransformersBackend

    try:
        backend = TransformersBackend.from_settings(LMSettings(threads=2))
    except ModelLoadError as exc:
        pytest.skip(f"the default LM is not converted yet (run `make setup` first): {exc}")
    batches, budget = grammar_prompts(ml100k_dataset, 3, 10)
    merged = [p for batch in batches for p in batch]
    backend.prefix_memo = None
    plain = [backend.generate_text(batch, budget) for batch in batches] + [backend.generate_text(merged, budget)]
    memo = backend.prefix_memo = PrefixMemo()
    try:
        reused = [backend.generate_text(batch, budget) for batch in batches] + [backend.generate_text(merged, budget)]
    finally:
        backend.prefix_memo = PrefixMemo()
    assert reused == plain
    head = len(backend.encode(batches[0][0])) - 50  # about the part every row of a list shares
    # the second and third lists copy the system prompt and the worked example's question (~85-110 tokens), the
    # merged call what all three users' heads share with one stored head (measured: 430 tokens reused in all)
    assert memo.reused_tokens >= 2 * 80 + 3 * 60 and memo.run_tokens < 3 * head, (memo.reused_tokens, memo.run_tokens)
