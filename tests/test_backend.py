"""The transformers backend against plain unbatched forward passes of the same tiny model.

Batching (left padding, explicit positions) and the shared-prefix KV cache are optimisations: they must
not change a single score or token.
"""

import torch

from recgen.lm.prompt import ChatPrompt


def _prompt(text: str, prefix: str = "") -> ChatPrompt:
    return ChatPrompt([{"role": "user", "content": text}], prefix)


def test_batched_label_scores_equal_single_forward(tiny_backend):
    prompts = [_prompt("short"), _prompt("a much longer prompt " * 6), _prompt("medium length text here")]
    labels = [["A", "B", "C"], ["A", "B"], ["C", "D", "E", "F"]]
    batched = tiny_backend.score_labels(prompts, labels)
    for prompt, row_labels, got in zip(prompts, labels, batched):
        ids = torch.tensor([tiny_backend.encode(prompt)])
        with torch.no_grad():
            logits = tiny_backend.model(input_ids=ids).logits[0, -1]
        want = torch.log_softmax(logits[[tiny_backend.label_id(l) for l in row_labels]], -1)  # over the labels
        expected = want.tolist()
        assert torch.allclose(torch.tensor(got), torch.tensor(expected), atol=1e-4)


def test_generate_labels_are_distinct_valid_and_k_long(tiny_backend):
    prompts = [_prompt("rank these"), _prompt("and these, a longer prompt " * 3)]
    labels = [list("ABCDEFGH"), list("ABCDE")]
    out = tiny_backend.generate_labels(prompts, labels, [5, 5])
    for picked, allowed in zip(out, labels):
        assert len(picked) == 5
        assert len(set(picked)) == 5
        assert set(picked) <= set(allowed)


def test_shared_prefix_generation_equals_one_by_one(tiny_backend):
    prefix = "The user liked: Synthetic Film 1; Synthetic Film 2. Recommended: "
    prompts = [_prompt(prefix + tail, "Reason:") for tail in ("Film 9", "A much longer film title here", "X")]
    batched = tiny_backend.generate_text(prompts, 12)
    singles = [tiny_backend.generate_text([p], 12)[0] for p in prompts]
    reference = []
    for p in prompts:  # plain HF greedy decoding, no cache tricks
        ids = torch.tensor([tiny_backend.encode(p)])
        out = tiny_backend.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                                          do_sample=False, pad_token_id=tiny_backend.tokenizer.pad_token_id)
        tokens = []
        for t in out[0, ids.shape[1]:].tolist():
            if t in tiny_backend._stop_ids:
                break
            tokens.append(t)
        reference.append(tiny_backend.tokenizer.decode(tokens, skip_special_tokens=True).strip())
    assert batched == singles == reference
