"""Ranker SFT examples from TRAINING histories only (validation/test targets never appear).

For a prefix ``train[:t]`` of a user's training sequence the target is ``train[t]``. Candidates are the
retriever's top-N for that prefix (hard negatives), excluding the user's later items (they are positives,
not negatives) and the held-out validation/test items.

By default the candidates keep the retriever's order, as at inference, and prefixes whose target was not
retrieved are skipped (the LM can only reorder what it is given), as LlamaRec does. The hybrid retriever's
item transitions are fitted out of fold: a user's candidates come from transitions counted on the other
folds' training sequences, so the user's own ``train[t-1] -> train[t]`` step cannot pull the target into
the list (that would make retrieval look more reliable in training than on unseen users).

The prompt is built with :func:`recgen.ranking.ranker.build_rank_prompt` exactly as at inference; the
supervised response is the label letter (optionally followed by the end-of-turn token).

With ``reasons_fraction`` a prefix also gives, with that probability, a reasons-task example (issue 14): the
grounded reason prompt for the user's real next item, built as the reasoner builds it (the related history item
picked by the same similarity and out-of-fold transitions, the worked example turn included), and a target
sentence made only of those facts in one of several seeded patterns. Trained jointly with ranking.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from types import SimpleNamespace

from ..data.catalog import Catalog
from ..data.split import UserSplit
from ..errors import DataError
from ..lm.prompt import ChatPrompt
from ..ranking.ranker import RankRequest, build_rank_prompt
from ..reasons.grounding import phrase_reason, select_facts
from ..reasons.prompts import build_grounded_prompt
from ..reasons.reasoner import closeness_of
from .config import SFTDataConfig

IGNORE = -100


@dataclass
class SFTExample:
    user_id: str
    kind: str  # "rank" or "reason"
    prompt: ChatPrompt
    response: str
    history: list[str]
    target: str
    candidates: list[str] = field(default_factory=list)


def _prefix_positions(n_train: int, cfg: SFTDataConfig, rng: random.Random) -> list[int]:
    positions = list(range(cfg.min_history, n_train))
    if len(positions) <= cfg.prefixes_per_user:
        return positions
    return sorted(rng.sample(positions, cfg.prefixes_per_user))


def user_folds(splits: list[UserSplit], n_folds: int, seed: int) -> dict[str, int]:
    """A seeded, balanced assignment of users to ``n_folds`` folds."""
    users = sorted(s.user_id for s in splits)
    random.Random(f"folds-{seed}").shuffle(users)
    return {user: n % n_folds for n, user in enumerate(users)}


def out_of_fold_transitions(catalog: Catalog, splits: list[UserSplit], cfg: SFTDataConfig, seed: int) -> tuple[dict, list]:
    """(user -> fold, per-fold ItemTransitions fitted on the other folds' TRAINING sequences)."""
    from ..retrieval.collaborative import ItemTransitions

    folds = user_folds(splits, cfg.collaborative_folds, seed)
    fitted = []
    for k in range(cfg.collaborative_folds):
        sequences = [list(s.train) for s in splits if folds[s.user_id] != k]
        fitted.append(ItemTransitions.fit(catalog, sequences))
    return folds, fitted


def build_sft_examples(catalog: Catalog, splits: list[UserSplit], retriever, cfg: SFTDataConfig,
                       seed: int = 0, stats: dict | None = None) -> list[SFTExample]:
    """Deterministic for a seed: users are visited in sorted order with one seeded RNG.

    With ``cfg.retrieval.collaborative_weight > 0`` each user's candidates are retrieved with out-of-fold
    transitions (passed per call; the retriever is not changed). ``stats`` (if given) receives counts of
    prefixes tried, retrieved and skipped."""
    rng = random.Random(seed)
    examples: list[SFTExample] = []
    counts = {"prefixes": 0, "target_retrieved": 0, "skipped_unretrieved": 0, "injected": 0}
    folds, fold_transitions = ({}, [])
    if cfg.retrieval.collaborative_weight > 0:
        folds, fold_transitions = out_of_fold_transitions(catalog, splits, cfg, seed)
    for split in sorted(splits, key=lambda s: s.user_id):
        transitions = fold_transitions[folds[split.user_id]] if fold_transitions else None
        _user_examples(catalog, split, retriever, transitions, cfg, rng, examples, counts)
        if cfg.max_examples and len(examples) >= cfg.max_examples:
            break
    if cfg.max_examples:
        examples = examples[: cfg.max_examples]
    if stats is not None:
        stats.update(counts)
    return examples


def _user_examples(catalog, split, retriever, transitions, cfg, rng, examples, counts) -> None:
    """Rank (and optional reason) examples from one user's training prefixes, appended to ``examples``."""
    train = list(split.train)
    held_out = {split.valid, split.test}
    for t in _prefix_positions(len(train), cfg, rng):
        history, target = train[:t], train[t]
        if target in held_out:  # a training item re-consumed later: never teach a held-out id
            continue
        exclude = (set(train[t + 1:]) | held_out) - {target}
        retrieved = [i for i, _ in retriever.retrieve(history, n=cfg.retrieval.n_candidates, exclude=exclude,
                                                        transitions=transitions)]
        if cfg.reasons_fraction and rng.random() < cfg.reasons_fraction:
            _reason_example(catalog, split.user_id, history, target, retriever, transitions, cfg, rng, examples)
            counts["reasons"] = counts.get("reasons", 0) + 1
        if len(retrieved) < 2:
            continue
        counts["prefixes"] += 1
        candidates = retrieved[: cfg.retrieval.n_candidates]
        if target in candidates:
            counts["target_retrieved"] += 1
        elif cfg.unretrieved_target == "skip":
            counts["skipped_unretrieved"] += 1
            continue
        else:
            counts["injected"] += 1
            candidates[-1] = target
            if cfg.candidate_order == "retrieval":  # never teach "the last one is the answer"
                candidates.pop()
                candidates.insert(rng.randrange(len(candidates) + 1), target)
        if cfg.candidate_order == "shuffled":
            rng.shuffle(candidates)
        request = RankRequest(history=history, query=None, candidates=candidates, k=10)
        prompt = build_rank_prompt(catalog, request, cfg.prompt)
        label = prompt.labels[candidates.index(target)]
        examples.append(SFTExample(split.user_id, "rank", prompt, label, history, target, candidates))


def _reason_example(catalog, user_id, history, target, retriever, transitions, cfg, rng, examples) -> None:
    """A reasons-task example: the grounded reason prompt for the user's real next item, exactly as the
    reasoner builds it (the related history item picked by the same similarity and transitions), and a
    target sentence made only of those facts in a seeded choice of patterns (so the model learns to use
    the facts, not one template). Every target passes the reason checker by construction."""
    past = [catalog.get(i) for i in history[-cfg.prompt.history:]]
    item = catalog.get(target)
    closeness = closeness_of(catalog, _embeddings(retriever), transitions)
    facts = select_facts(item, past, None, closeness)
    reason = phrase_reason(facts, rng, cfg.prompt.title_chars)
    prompt = build_grounded_prompt(facts, cfg.prompt)
    examples.append(SFTExample(user_id, "reason", prompt, " " + reason, history, target))


def _embeddings(retriever):
    return getattr(retriever, "item_embeddings", None)


def render(tokenizer, prompt: ChatPrompt) -> str:
    """The exact text the transformers backend feeds the model (chat template + response prefix)."""
    from ..lm.transformers_backend import TransformersBackend

    return TransformersBackend.render(SimpleNamespace(tokenizer=tokenizer), prompt)


def end_of_turn_id(tokenizer) -> int:
    token = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(token, int) and token != tokenizer.unk_token_id:
        return token
    return tokenizer.eos_token_id


def encode_example(tokenizer, example: SFTExample, *, supervise_end_of_turn: bool = False) -> dict:
    """``input_ids`` = prompt + response; ``labels`` = -100 on the prompt, the response ids after it."""
    prompt_ids = tokenizer(render(tokenizer, example.prompt), add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(example.response, add_special_tokens=False)["input_ids"]
    if example.kind == "rank" and len(response_ids) != 1:
        raise DataError(f"label {example.response!r} is {len(response_ids)} tokens; labels must be one token")
    if supervise_end_of_turn or example.kind == "reason":
        response_ids = response_ids + [end_of_turn_id(tokenizer)]
    return {"input_ids": prompt_ids + response_ids, "labels": [IGNORE] * len(prompt_ids) + response_ids}


def encode_all(tokenizer, examples: list[SFTExample], *, max_length: int, supervise_end_of_turn: bool = False,
               min_examples: int = 1) -> tuple[list[dict], int]:
    """Encoded rows (longer than ``max_length`` dropped, never truncated) and how many were dropped."""
    rows, dropped = [], 0
    for example in examples:
        row = encode_example(tokenizer, example, supervise_end_of_turn=supervise_end_of_turn)
        if len(row["input_ids"]) > max_length:
            dropped += 1
            continue
        rows.append(row)
    if len(rows) < min_examples:
        raise DataError(
            f"only {len(rows)} SFT example(s) after encoding ({len(examples)} built, {dropped} longer than "
            f"max_length={max_length}); at least {min_examples} (batch_size x grad_accum) are needed: use a "
            "larger dataset, more prefixes_per_user, a smaller min_history or a smaller batch"
        )
    return rows, dropped
