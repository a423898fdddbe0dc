"""The default backend: a transformers causal LM (optionally with a peft LoRA adapter) on CPU or GPU.

Score mode reads the next-token logits of the label tokens at the last position only
(``logits_to_keep=1``), so a ranking costs one forward pass. Generation of label lists uses
``prefix_allowed_tokens_fn`` so the model can emit only unused, valid labels. Reasons for one user
share a prompt prefix, which is run once and its KV cache reused for every item. A reason prompt that
carries a vocabulary (a ``Vocabulary`` constraint) is decoded under :class:`.logits.AllowedTokensProcessor`
(only those words' tokens, punctuation and end of turn) with no repeated 3-gram; one that carries sentences
(a ``Choice`` constraint) writes exactly one of them (:class:`.choices.ChoiceTrie`), the model asked only where
they branch (jump-forward: the tokens between are run in one forward pass).
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path

import torch

from ..config import LMSettings
from ..errors import ModelLoadError
from .adapters import AdapterSet, group_by_adapter, load_adapter_set
from .backend import ChatTokenizing
from .checks import LOAD_ERRORS, check_adapter_folder, check_model_folder
from .choices import ChoiceTrie, choices_of
from .constrained import AllowedTokens, WordVocabulary
from .kv_memo import PrefixMemo, common_prefix_length
from .logits import AllowedTokensProcessor
from .prompt import ChatPrompt
from .resolve import resolve_lm
from .vocabulary import vocabulary_of

#: A constrained reason never repeats a 3-gram (a small vocabulary otherwise invites loops).
NO_REPEAT_NGRAM = 3


class TransformersBackend(ChatTokenizing):
    """With named adapters (peft, one ``adapter_name`` each) every call runs each prompt under the adapter it
    selects, group by group (peft has one active adapter at a time, hence the lock)."""

    name = "transformers"

    def __init__(self, model, tokenizer, device: str = "cpu", adapters: AdapterSet | None = None,
                 jump_forward: bool = True, prefix_memo: PrefixMemo | None = None):
        """``adapters``: the named adapters loaded into ``model`` (a PeftModel); without them the model is
        used as given (e.g. a model being trained, with its adapter active). ``jump_forward``: choice rows
        append the tokens their trie forces in one step (:mod:`.choices`); off, one token a step (the
        reference the tests and benchmarks compare with). ``prefix_memo``: keep recent prompt prefixes' KV
        between calls (:mod:`.kv_memo`); only for weights that do not change (loaded to serve, not trained)."""
        self.model = model.eval()
        self.jump_forward = jump_forward
        self.prefix_memo = prefix_memo
        #: forward passes of the last ``generate_text`` batch (the prefill included): what jump-forward saves
        self.last_steps = 0
        self.tokenizer = tokenizer
        self.device = device
        self.adapters = adapters or AdapterSet({}, None)
        self._lock = threading.RLock()
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._newline_ids = {i for t, i in tokenizer.get_vocab().items() if "\n" in tokenizer.convert_tokens_to_string([t])}
        self._stop_ids = set(self._newline_ids) | {tokenizer.eos_token_id}
        end_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
        ends = {tokenizer.eos_token_id}
        if isinstance(end_turn, int) and end_turn != tokenizer.unk_token_id:
            self._stop_ids.add(end_turn)
            ends.add(end_turn)
        self.allowed_tokens = AllowedTokens(tokenizer, ends | set(tokenizer("\n", add_special_tokens=False)["input_ids"]))
        self._label_cache: dict[str, int] = {}

    # -- loading ------------------------------------------------------------------------------
    @classmethod
    def from_settings(cls, settings: LMSettings) -> "TransformersBackend":
        """Load ``settings.model`` (+ adapter); any broken file is a ModelLoadError naming it."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if settings.threads:
            torch.set_num_threads(settings.threads)
        path = resolve_lm(settings.model)
        check_model_folder(path)
        adapters = load_adapter_set(settings, path)
        fix = ("check that it is a Hugging Face causal-LM folder with tokenizer files and safetensors weights "
               "(or a hub id), or re-download / re-save it")
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=settings.trust_remote_code)
        except LOAD_ERRORS as exc:
            raise ModelLoadError(f"cannot load the tokenizer of language model {settings.model or path!r}: "
                                 f"{_gist(exc)}; {fix}") from None
        dtype = settings.dtype if settings.dtype != "auto" else (torch.float32 if settings.device == "cpu" else "auto")
        try:
            model = AutoModelForCausalLM.from_pretrained(
                path, dtype=dtype,
                trust_remote_code=settings.trust_remote_code, use_safetensors=True,  # never unpickle weights
            )
        except LOAD_ERRORS as exc:
            raise ModelLoadError(f"cannot load language model {settings.model or path!r}: {_gist(exc)}; {fix}") from None
        for name, info in adapters.adapters.items():
            model = load_adapter(model, info.path, name)
        return cls(model.to(settings.device), tokenizer, settings.device, adapters, prefix_memo=PrefixMemo())

    # -- named adapters -----------------------------------------------------------------------
    def _active(self, name: str | None):
        """Make adapter ``name`` (None = the base model) the one peft runs."""
        if not self.adapters.adapters:
            return contextlib.nullcontext()
        if name is None:
            return self.model.disable_adapter()
        self.model.set_adapter(name)
        return contextlib.nullcontext()

    def _per_adapter(self, prompts: list[ChatPrompt], run) -> list:
        """``run(positions)`` → results for those prompts, called once per adapter group; results in prompt order."""
        groups = group_by_adapter(prompts, self.adapters)  # an unknown name fails here, before any work
        out: list = [None] * len(prompts)
        with self._lock if self.adapters.adapters else contextlib.nullcontext():
            for name, positions in groups.items():
                with self._active(name):
                    for n, result in zip(positions, run(positions)):
                        out[n] = result
        return out

    # -- prompt encoding ----------------------------------------------------------------------
    def _left_pad(self, rows: list[list[int]]):
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.device)
        return ids, mask

    @staticmethod
    def _positions(mask: torch.Tensor, offset: int | torch.Tensor = 0) -> torch.Tensor:
        return (mask.cumsum(-1) - 1).clamp(min=0) + offset

    # -- score mode ---------------------------------------------------------------------------
    def score_labels(self, prompts: list[ChatPrompt], labels: list[list[str]]) -> list[list[float]]:
        """Next-token log-probs of the labels, normalised over the labels (their probabilities sum to 1): the
        scale vLLM returns (it masks other tokens before the softmax), so scores mean the same in both."""
        return self._per_adapter(prompts, lambda at: self._score([prompts[n] for n in at], [labels[n] for n in at]))

    @torch.inference_mode()
    def _score(self, prompts: list[ChatPrompt], labels: list[list[str]]) -> list[list[float]]:
        ids, mask = self._left_pad([self.encode(p) for p in prompts])
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=self._positions(mask),
                            logits_to_keep=1).logits[:, -1, :]
        out = []
        for row, row_labels in enumerate(labels):
            ids_ = torch.tensor([self.label_id(l) for l in row_labels], device=logits.device)
            out.append(torch.log_softmax(logits[row, ids_].float(), dim=-1).tolist())
        return out

    # -- constrained label lists --------------------------------------------------------------
    def generate_labels(self, prompts: list[ChatPrompt], labels: list[list[str]], k: list[int]) -> list[list[str]]:
        return self._per_adapter(prompts, lambda at: self._generate_labels(
            [prompts[n] for n in at], [labels[n] for n in at], [k[n] for n in at]))

    @torch.inference_mode()
    def _generate_labels(self, prompts: list[ChatPrompt], labels: list[list[str]], k: list[int]) -> list[list[str]]:
        newline = self.tokenizer("\n", add_special_tokens=False)["input_ids"]
        if len(newline) != 1:
            raise ModelLoadError("this tokenizer has no single newline token; use score mode")
        sep, eos = newline[0], self.tokenizer.eos_token_id
        encoded = [self.encode(p) for p in prompts]
        ids, mask = self._left_pad(encoded)
        width = ids.shape[1]
        label_ids = [[self.label_id(l) for l in row] for row in labels]

        def allowed(batch_id: int, sequence: torch.Tensor) -> list[int]:
            written = sequence[width:].tolist()
            chosen = [t for t in written if t != sep]
            if written and written[-1] != sep:
                return [sep]
            if len(chosen) >= k[batch_id]:
                return [eos]
            remaining = [t for t in label_ids[batch_id] if t not in chosen]
            return remaining or [eos]

        out = self.model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=2 * max(k) + 1, do_sample=False, num_beams=1,
            prefix_allowed_tokens_fn=allowed, pad_token_id=self.tokenizer.pad_token_id, eos_token_id=eos,
        )
        results = []
        for row, sequence in enumerate(out[:, width:].tolist()):
            by_id = {i: l for l, i in zip(labels[row], label_ids[row])}
            picked = []
            for token in sequence:
                if token == eos:
                    break
                if token in by_id and by_id[token] not in picked:
                    picked.append(by_id[token])
            results.append(picked[: k[row]])
        return results

    # -- free text with a shared prefix ------------------------------------------------------
    def generate_text(self, prompts: list[ChatPrompt], max_new_tokens: int) -> list[str]:
        if not prompts:
            return []
        return self._per_adapter(prompts, lambda at: self._generate_text(
            [prompts[n] for n in at], max_new_tokens, self.adapters.pick(prompts[at[0]].adapter)))

    @torch.inference_mode()
    def _generate_text(self, prompts: list[ChatPrompt], max_new_tokens: int, adapter: str | None = None) -> list[str]:
        """Greedy decoding for a batch whose rows share prefixes (one user's reasons, or several users' reasons
        merged by :class:`.scheduler.LMScheduler`).

        The rows fall into runs that share a prefix (:func:`shared_prefix_runs`: one run per user when that saves
        the most prefill); each run's prefix is run once, in one left-padded batch of prefixes, and its KV cache
        copied to the run's rows, so only each row's own suffix is prefilled. Suffixes are left-padded after
        their prefix, with explicit position ids, so padding never shifts positions. ``adapter``: the one these
        prompts run under (the prefix memo's KV depends on it).
        """
        from transformers import DynamicCache

        rows = [self.encode(p) for p in prompts]
        groups = shared_prefix_runs(rows)
        batch = len(rows)
        heads = [rows[start][:shared] for start, _end, shared in groups]
        if not all(heads):  # a row with nothing to share (a one-token prompt): no prefix pass at all
            cache = DynamicCache(config=self.model.config)
            groups, prefix_mask = [(0, batch, 0)], torch.ones((batch, 0), dtype=torch.long, device=self.device)
        else:
            cache, prefix_mask = self._prefill_heads(heads, adapter)
            owner = torch.tensor([g for g, (start, end, _) in enumerate(groups) for _ in range(start, end)],
                                 device=self.device)
            cache.batch_select_indices(owner)
            prefix_mask = prefix_mask[owner]
        shared = torch.tensor([[s] for start, end, s in groups for _ in range(start, end)], device=self.device)
        suffix_ids, suffix_mask = self._left_pad([r[s:] for r, s in zip(rows, shared[:, 0].tolist())])
        mask = torch.cat([prefix_mask, suffix_mask], dim=1)
        positions = self._positions(suffix_mask, shared)
        logits = self.model(input_ids=suffix_ids, attention_mask=mask, position_ids=positions,
                            past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1, :]
        next_pos = positions[:, -1:] + 1
        constrain = self._constraints(prompts)
        written: list[list[int]] = [[] for _ in range(batch)]
        fed: list[list[int]] = [[] for _ in range(batch)]  # every token run after the prompt (done rows' too)
        done = [False] * batch
        self.last_steps = 1
        while not all(done):
            if constrain is not None:
                logits = constrain(fed, logits)
            feed = self._next_tokens(logits.argmax(-1).tolist(), written, done, constrain, max_new_tokens)
            for row, tokens in enumerate(feed):
                fed[row].extend(tokens)
            if all(done):
                break
            logits, mask, next_pos = self._step(feed, mask, next_pos, cache)
            self.last_steps += 1
        return [self.tokenizer.decode(w, skip_special_tokens=True).strip() for w in written]

    def _prefill_heads(self, heads: list[list[int]], adapter: str | None):
        """The KV cache of each run's shared prefix (one cache row a run) and its attention mask. With a prefix
        memo, the start every head shares with a stored prefix is copied from it and only the rest is run; the
        first head is stored for the next call (the system prompt and worked example recur across users)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        reused, layers = self.prefix_memo.lookup(adapter, heads) if self.prefix_memo is not None else (0, [])
        reused = min(reused, min(len(h) for h in heads) - 1)  # every head runs a token of its own at least
        for layer, (keys, values) in enumerate(layers):
            cache.update(keys[:, :, :reused].expand(len(heads), -1, -1, -1),
                         values[:, :, :reused].expand(len(heads), -1, -1, -1), layer)
        rest_ids, rest_mask = self._left_pad([h[reused:] for h in heads])
        mask = torch.cat([torch.ones((len(heads), reused), dtype=rest_mask.dtype, device=self.device), rest_mask], 1)
        self.model(input_ids=rest_ids, attention_mask=mask, position_ids=self._positions(rest_mask, reused),
                   past_key_values=cache, use_cache=True, logits_to_keep=1)
        if self.prefix_memo is not None:
            self.prefix_memo.reused_tokens += reused * len(heads)
            self.prefix_memo.run_tokens += int(rest_mask.sum())
            if len(heads[0]) > reused:
                keep = mask[0].bool()
                self.prefix_memo.store(adapter, heads[0], [(layer.keys[0:1, :, keep], layer.values[0:1, :, keep])
                                                           for layer in cache.layers])
        return cache, mask

    def _next_tokens(self, picked: list[int], written: list[list[int]], done: list[bool], constrain,
                     max_new_tokens: int) -> list[list[int]]:
        """Each row's tokens for the next step, ``written`` and ``done`` updated: the greedy pick, and on a choice
        row (jump-forward) the run of tokens its trie forces after it, so the model is asked again only where
        the choices branch. A choice row that is done runs nothing more; every other row runs one token a step
        (its pick, as before), so a vocabulary row's history stays one token per step."""
        feed = []
        for row, token in enumerate(picked):
            jumps = constrain is not None and constrain.jumps(row)
            if done[row]:
                feed.append([] if jumps else [token])
                continue
            if token in self._stop_ids:
                done[row] = True
                feed.append([token])
                continue
            tokens = [token] + (constrain.forced(row, written[row] + [token]) if jumps and self.jump_forward else [])
            tokens = tokens[: max_new_tokens - len(written[row])]
            written[row].extend(tokens)
            done[row] = len(written[row]) >= max_new_tokens or (constrain is not None and
                                                                constrain.finished(row, written[row]))
            feed.append(tokens)
        return feed

    def _step(self, feed: list[list[int]], mask: torch.Tensor, next_pos: torch.Tensor, cache):
        """One forward pass over each row's new tokens, left-padded to the longest (the padding masked out, explicit
        positions), so every row's last token is the batch's last position and only its logits are computed:
        each row's logits after its last token, the extended mask and the rows' next positions."""
        width = max(len(tokens) for tokens in feed)
        pad = self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(tokens)) + tokens for tokens in feed], device=self.device)
        new_mask = torch.tensor([[0] * (width - len(tokens)) + [1] * len(tokens) for tokens in feed],
                                dtype=mask.dtype, device=self.device)
        mask = torch.cat([mask, new_mask], dim=1)
        lengths = torch.tensor([[len(tokens)] for tokens in feed], device=self.device)
        positions = next_pos - (width - lengths) + torch.arange(width, device=self.device)[None, :]
        logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions.clamp(min=0),
                            past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1, :]
        return logits, mask, next_pos + lengths

    def _constraints(self, prompts: list[ChatPrompt]):
        """``(generated, logits) -> logits`` for a batch with any constrained prompt, else None."""
        parts = [c for c in (self._word_constraint(prompts), self._choice_constraint(prompts)) if c is not None]
        return _Constraints(parts) if parts else None

    def _choice_constraint(self, prompts: list[ChatPrompt]):
        choices = [choices_of(p) for p in prompts]
        if not any(choices):
            return None
        return _ChoiceConstraint([ChoiceTrie.for_choices(self.tokenizer, c) if c else None for c in choices])

    def _word_constraint(self, prompts: list[ChatPrompt]):
        from transformers import LogitsProcessorList, NoRepeatNGramLogitsProcessor

        vocabularies = [vocabulary_of(p) for p in prompts]
        if not any(vocabularies):
            return None
        allowed = [self.allowed_tokens.ids_for(list(v.words), list(v.phrases)) if v else None for v in vocabularies]
        words = [WordVocabulary(list(v.words), list(v.phrases), v.rules, self.allowed_tokens.boundaries) if v else None
                 for v in vocabularies]
        processor = AllowedTokensProcessor(allowed, words, self.allowed_tokens.text, self.allowed_tokens.stop_ids)
        processors = LogitsProcessorList([NoRepeatNGramLogitsProcessor(NO_REPEAT_NGRAM), processor])
        return _Constraint(processors, processor, torch.tensor([v is not None for v in vocabularies],
                                                                device=self.device)[:, None])


class _Constraints:
    """Several row-wise constraints of one batch (each leaves the rows it does not own as they are)."""

    def __init__(self, parts):
        self.parts = parts

    def __call__(self, generated, logits):
        for part in self.parts:
            logits = part(generated, logits)
        return logits

    def finished(self, row: int, written: list[int]) -> bool:
        return any(part.finished(row, written) for part in self.parts)

    def jumps(self, row: int) -> bool:
        return any(part.jumps(row) for part in self.parts)

    def forced(self, row: int, written: list[int]) -> list[int]:
        return [t for part in self.parts for t in part.forced(row, written)]


class _ChoiceConstraint:
    """Rows with choices may write only tokens that continue one of them; a row ends on a whole choice that no
    other continues (a choice that starts another is not an end)."""

    def __init__(self, tries: list[ChoiceTrie | None]):
        self.tries = tries

    def __call__(self, generated: list[list[int]], logits):
        logits = logits.clone()
        for row, trie in enumerate(self.tries):
            if trie is not None:
                allowed = trie.allowed(generated[row])
                keep = logits[row, allowed] if allowed else None
                logits[row] = float("-inf")
                if allowed:
                    logits[row, allowed] = keep
        return logits

    def finished(self, row: int, written: list[int]) -> bool:
        trie = self.tries[row]
        return trie is not None and trie.finished(written)

    def jumps(self, row: int) -> bool:
        return self.tries[row] is not None

    def forced(self, row: int, written: list[int]) -> list[int]:
        trie = self.tries[row]
        return trie.forced(written) if trie is not None else []


class _Constraint:
    """The logits processors of a batch with constrained rows; free rows of a mixed batch are decoded exactly as
    they would be alone. Repeats are banned first, so the word check picks among what is left."""

    def __init__(self, processors, allowed: AllowedTokensProcessor, rows: torch.Tensor):
        self.processors, self.allowed, self.rows = processors, allowed, rows

    def __call__(self, generated: list[list[int]], logits):
        """``generated``: every row's tokens so far; this constraint's rows run one token a step, so they are
        all as long (the other rows, whose result is not kept, are cut or padded to that length)."""
        width = max((len(g) for g, own in zip(generated, self.rows[:, 0].tolist()) if own), default=0)
        history = torch.tensor([g[len(g) - width:] if len(g) >= width else [0] * (width - len(g)) + g
                                for g in generated], dtype=torch.long, device=logits.device)
        return torch.where(self.rows, self.processors(history, logits), logits)

    def finished(self, row: int, written: list[int]) -> bool:
        return bool(self.rows[row, 0]) and self.allowed.sentence_done(row, written)

    def jumps(self, row: int) -> bool:
        return False

    def forced(self, row: int, written: list[int]) -> list[int]:
        return []


def shared_prefix_runs(rows: list[list[int]]) -> list[tuple[int, int, int]]:
    """Runs of consecutive rows ``(start, end, shared prefix length)`` that prefill the fewest tokens.

    A run of ``n`` rows whose common prefix is ``p`` tokens saves ``(n - 1) * p`` tokens of prefill; the split
    that saves the most is found exactly (O(rows²), rows ≤ a batch). One user's reasons share the long history
    part, and several users' merged reasons share only the system prompt, so the best split is one run per
    user, found from the tokens alone (the scheduler passes nothing but prompts). Every row keeps at least one
    token of its own, so each row has logits to start from."""
    n = len(rows)
    adjacent = [common_prefix_length(rows[i], rows[i + 1]) for i in range(n - 1)]
    best = [0] * (n + 1)       # best[j]: most tokens saved over rows[:j]
    cut = [0] * (n + 1)        # where the last run of that best split starts
    for end in range(1, n + 1):
        best[end], cut[end] = best[end - 1], end - 1  # the last row alone
        shared = len(rows[end - 1]) - 1
        for start in range(end - 2, -1, -1):   # extend the last run backwards
            shared = min(shared, adjacent[start], len(rows[start]) - 1)
            saved = best[start] + (end - start - 1) * shared
            if saved > best[end]:
                best[end], cut[end] = saved, start
    runs, end = [], n
    while end > 0:
        start = cut[end]
        shared = min(len(r) for r in rows[start:end]) - 1
        for i in range(start, end - 1):
            shared = min(shared, adjacent[i])
        runs.append((start, end, shared))
        end = start
    return runs[::-1]


def load_adapter(model, adapter: str, name: str = "default"):
    """Apply a peft LoRA adapter folder under ``name`` (a second one is added beside the first):
    safetensors only (``adapter_model.bin`` is a pickle and refused); a broken or mismatched adapter is a
    ModelLoadError naming the folder."""
    from peft import PeftModel

    check_adapter_folder(adapter)  # peft reads adapter_model.safetensors when it exists, never the .bin
    folder = str(Path(adapter).expanduser())
    try:
        if isinstance(model, PeftModel):
            model.load_adapter(folder, adapter_name=name, is_trainable=False)
            return model
        return PeftModel.from_pretrained(model, folder, adapter_name=name, is_trainable=False)
    except LOAD_ERRORS as exc:
        raise ModelLoadError(
            f"adapter {adapter} cannot be applied to this language model ({_gist(exc)}): use the base model "
            "it was trained on (its adapter_config.json names it) or retrain the adapter"
        ) from None


def _gist(exc: BaseException) -> str:
    """The gist of a library error: one line, at most 300 characters."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"
