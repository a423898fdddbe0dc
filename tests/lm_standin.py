"""A stand-in LM that knows something the interactions do not, and a small world where that knowledge matters.

The world (:func:`gem_world`): items belong to topics; users stay in one topic. Each topic also has NEW items
that no training sequence holds (cold): ``gems`` that users go on to like and as many "duds" that nobody picks.
A user's validation and test items are a gem of their topic with probability ``p_gem``, else another regular
item of it. From the training interactions a ranker sees equally cold, equally on-topic items; only other users'
validation targets tell gems from duds, and a topic has few users (a gem is picked once or twice), so that
evidence is thin.

The LM (:func:`save_gem_lm`): a real Llama (HF folder, safetensors, the SmolLM2 tokenizer, loaded and run by
recgen's transformers backend like any model) whose weights are set by hand, not trained, so that it knows
which titles are gems — the way a pretrained LM knows which new release is good. It reads the ranking prompt
as recgen writes it and puts its probability on the labels of the lines whose title names a gem; it never sees
a user's held-out item, and it knows nothing of topics or of which gem a user picks. Mechanism (2 layers, no
position signal: RoPE is made inert by a huge base and zeroed rotating dims):

1. one head at every token counts the gem tokens before it, against the chat's ``<|im_start|>`` tokens as a
   fixed-weight sink: ``g = G / (G + S)`` (monotone in the count ``G``);
2. at the last token, head j reads ``g`` at line j's label token (the one-token letter opening the line; head
   j falls back to the ``Answer`` token after the list), so ``g(label j+1) - g(label j) > 0`` exactly when line
   j names a gem; the unembedding turns those differences into label logits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recgen.data import Catalog, Dataset, Item


def single_token_words(tokenizer, n: int) -> list[str]:
    """``n`` distinct lowercase words (4-8 letters) that are one token each after a space, in vocabulary order."""
    words = []
    for token, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
        word = tokenizer.convert_tokens_to_string([token])
        if word.startswith(" ") and word[1:].isascii() and word[1:].isalpha() and word[1:].islower() \
                and 4 <= len(word) - 1 <= 8 and len(tokenizer(word, add_special_tokens=False)["input_ids"]) == 1:
            words.append(word[1:])
            if len(words) == n:
                return words
    raise ValueError(f"only {len(words)} single-token words for {n}")


def gem_world(tokenizer, n_users: int = 480, topics: int = 40, regular: int = 8, gems: int = 4, length: int = 8,
              p_gem: float = 0.7, seed: int = 0, duds: int | None = None) -> tuple[Dataset, set[str]]:
    """(the dataset, the gem items' title words: what the stand-in LM knows). See the module doc; ``duds``
    (default: as many as ``gems``) cold on-topic items nobody picks."""
    rng = np.random.default_rng(seed)
    duds = gems if duds is None else duds
    per_topic = regular + gems + duds
    words = single_token_words(tokenizer, topics * (per_topic + 1))
    names, words = [w.capitalize() for w in words[:topics]], words[topics:]
    items, regulars, good, gem_words = [], {}, {}, set()
    for t, topic in enumerate(names):
        ids = [f"{topic.lower()}-{k}" for k in range(per_topic)]
        for k, item_id in enumerate(ids):
            items.append(Item(item_id, f"{topic} {words[t * per_topic + k]}", (), None))
        regulars[topic], good[topic] = ids[:regular], ids[regular:regular + gems]  # the last ``duds``: duds
        gem_words |= {words[t * per_topic + k] for k in range(regular, regular + gems)}
    sequences = {}
    for u in range(n_users):
        topic = names[int(rng.integers(len(names)))]
        seq = list(rng.choice(regulars[topic], size=length - 2, replace=False))
        for _ in range(2):  # validation and test items
            unseen_gems = [g for g in good[topic] if g not in seq]
            if unseen_gems and rng.random() < p_gem:
                seq.append(str(rng.choice(unseen_gems)))
            else:
                seq.append(str(rng.choice([i for i in regulars[topic] if i not in seq])))
        sequences[f"u{u}"] = [str(i) for i in seq]
    order = rng.permutation(len(items))  # catalog order says nothing (sources rank tied items in catalog order)
    return Dataset("gems", Catalog([items[i] for i in order]), sequences), gem_words


def save_gem_lm(tokenizer_dir: str, folder: Path, gem_words: set[str]) -> str:
    """The stand-in LM (see the module doc) saved as an HF folder with the tokenizer of ``tokenizer_dir``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    one = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    letters = [chr(ord("A") + i) for i in range(26)]
    letter_ids = [one(c)[0] for c in letters]
    sink, end = tok.convert_tokens_to_ids("<|im_start|>"), one("Answer")[0]
    gem_ids = [one(" " + w)[0] for w in sorted(gem_words)]
    reads = 21  # head j reads line j's label (j = 1..20), head 21 the "Answer" token
    C, F, SINK, GEM, END, LET, G, R = 0, 1, 2, 3, 4, 5, 31, 32  # residual dims (R: R..R+reads-1)
    heads, hd = reads + 1, 4
    d = heads * hd  # Llama wants the hidden size to be heads x head_dim
    config = LlamaConfig(hidden_size=d, intermediate_size=8, num_hidden_layers=2, num_attention_heads=heads,
                         num_key_value_heads=heads, head_dim=hd, vocab_size=len(tok), max_position_embeddings=4096,
                         tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 1e30},
                         rms_norm_eps=1e-6)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        emb = model.model.embed_tokens.weight
        emb[:, C], emb[:, F] = 1.0, 1.0  # every token: norm sqrt(2), so RMSNorm scales them all alike
        for ids, dim in ((gem_ids, GEM), ([sink], SINK), ([end], END)):
            for i in ids:
                emb[i, F], emb[i, dim] = 0.0, 1.0
        for k, i in enumerate(letter_ids):
            emb[i, F], emb[i, LET + k] = 0.0, 1.0
        nu = (d / 2) ** 0.5  # what RMSNorm multiplies an embedding by
        scale = hd ** 0.5  # attention divides q.k by this
        for layer in model.model.layers:
            layer.input_layernorm.weight.fill_(1.0)
            layer.post_attention_layernorm.weight.fill_(1.0)  # MLP weights stay 0: no MLP
        model.model.norm.weight.fill_(1.0)
        # layer 1, head 0 (q/k in head dim 1, which RoPE leaves alone): score 40 for gems, 40 + ln(25) for sinks
        a1 = model.model.layers[0].self_attn
        beta = 40.0
        a1.q_proj.weight[1, C] = 1.0 / nu
        a1.k_proj.weight[1, GEM] = beta * scale / nu
        a1.k_proj.weight[1, SINK] = (beta + np.log(25.0)) * scale / nu
        a1.v_proj.weight[0, GEM] = 1.0 / nu  # value 1 on gem tokens, 0 on sinks
        a1.o_proj.weight[G, 0] = 0.05  # g = 0.05 * G / (G + 2 * 25): small beside the embedding's norm
        # layer 2, heads 1..21: head j attends to label j (score 60), else to "Answer" (30), else nothing (0)
        a2 = model.model.layers[1].self_attn
        for j in range(reads):
            h = (j + 1) * hd
            a2.q_proj.weight[h + 1, C] = 1.0 / nu
            if j < 20:
                a2.k_proj.weight[h + 1, LET + j] = 60.0 * scale / nu
            a2.k_proj.weight[h + 1, END] = 30.0 * scale / nu
            a2.v_proj.weight[h, G] = 1.0  # the g that layer 1 wrote at that token
            a2.o_proj.weight[R + j, h] = 1.0
        # unembedding: label j's logit = lam * (g at label j+1 - g at label j); a list of n labels reads "Answer"
        # for label n+1 (head j falls back to it), so the last line is compared with the end of the list
        lam = 200.0
        for j in range(20):
            model.lm_head.weight[letter_ids[j], R + j + 1] = lam
            model.lm_head.weight[letter_ids[j], R + j] = -lam
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    return str(folder)
