"""recgen.finetune: config validation, SFT data hygiene, a tiny LoRA run, checkpoints and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

import builders  # noqa: E402

from recgen.atomic import atomic_folder  # noqa: E402
from recgen.data import Catalog, Dataset, Item, leave_one_out  # noqa: E402
from recgen.errors import ConfigError, DataError  # noqa: E402
from recgen.finetune.checkpoint import CheckpointError, latest_checkpoint  # noqa: E402
from recgen.finetune.config import RankerFinetuneConfig, SFTDataConfig, load_ranker_config, validate  # noqa: E402
from recgen.finetune.sft_data import IGNORE, build_sft_examples, encode_example  # noqa: E402
from recgen.finetune.trainer import RankerTrainer  # noqa: E402

GENRES = ("Drama", "Comedy", "Action", "Horror", "Romance")


class FakeRetriever:
    """Deterministic stand-in for the FAISS retriever: items in catalog order, history/exclude skipped."""

    def __init__(self, catalog):
        self.catalog = catalog
        self.transitions = None
        self.calls_with_transitions = 0

    def rebound(self, settings, transitions=None):
        self.transitions = transitions  # what the pipeline factory would bind (ignored when retrieving)
        return self

    def retrieve(self, history, query=None, n=20, exclude=None, transitions=None):
        self.calls_with_transitions += transitions is not None
        skip = set(history) | set(exclude or ())
        start = int(history[-1]) if history else 0
        ids = self.catalog.ids[start:] + self.catalog.ids[:start]
        return [(i, 1.0) for i in ids if i not in skip][:n]


def make_dataset(n_users: int = 12, length: int = 9, n_items: int = 60) -> Dataset:
    return builders.make_dataset(n_items, n_users, length, start=7, stride=5, name="tiny")


@pytest.fixture(scope="module")
def tiny_lm(tiny_lm_dir) -> str:
    return tiny_lm_dir


def ranker_config(tiny_lm: str, out: Path, **train) -> RankerFinetuneConfig:
    settings = dict(batch_size=2, grad_accum=2, max_steps=3, checkpoint_every=1, eval_every=2, eval_users=6,
                    warmup_steps=1, threads=1, keep_checkpoints=5)
    settings.update(train)
    return RankerFinetuneConfig(
        name="tiny", dataset="tiny", lm=tiny_lm, output_dir=str(out / "run"), results_dir=str(out / "results"),
        data=SFTDataConfig(retrieval={"n_candidates": 8}, prompt={"history": 4}, min_history=2, prefixes_per_user=2),
        lora={"r": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}, train=settings,
    )


def make_trainer(cfg, dataset=None) -> RankerTrainer:
    dataset = dataset or make_dataset()
    return RankerTrainer(cfg).prepare(dataset=dataset, retriever=FakeRetriever(dataset.catalog))


# -- config --------------------------------------------------------------------------------------------------
def test_config_lists_unknown_keys_and_wrong_types(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ndataset: ml-100k\noutput_dir: out\nlearning_rate: 0.1\n"
                    "train:\n  max_steps: many\n  batchsize: 4\nlora:\n  r: 64\n  target_modules: [lm_head]\n")
    with pytest.raises(ConfigError) as err:
        load_ranker_config(path)
    message = str(err.value)
    for fragment in ("learning_rate", "train.max_steps", "train.batchsize", "lora.r", "lm_head", "bad.yaml"):
        assert fragment in message, (fragment, message)


def test_shipped_recipes_validate():
    from recgen.finetune.config import load_retriever_config

    root = Path(__file__).resolve().parents[1] / "finetune"
    for name in ("ml-100k-ranker", "beauty-ranker"):
        assert load_ranker_config(root / f"{name}.yaml").lora.r <= 16
    for name in ("ml-100k-retriever", "beauty-retriever"):
        load_retriever_config(root / f"{name}.yaml")
    with pytest.raises(ConfigError, match="kind"):
        validate(RankerFinetuneConfig, {"name": "x", "dataset": "d", "output_dir": "o", "kind": "retriever"})


# -- SFT data --------------------------------------------------------------------------------------------------
def test_sft_examples_exclude_heldout_targets_and_are_deterministic():
    dataset = make_dataset()
    splits = leave_one_out(dataset).splits
    retriever = FakeRetriever(dataset.catalog)
    cfg = SFTDataConfig(retrieval={"n_candidates": 8}, prompt={"history": 4}, min_history=2, prefixes_per_user=3, candidate_order="shuffled")
    first = build_sft_examples(dataset.catalog, splits, retriever, cfg, seed=3)
    second = build_sft_examples(dataset.catalog, splits, retriever, cfg, seed=3)
    assert first and [(e.prompt.messages, e.response) for e in first] == [(e.prompt.messages, e.response) for e in second]
    other = build_sft_examples(dataset.catalog, splits, retriever, cfg, seed=4)
    assert [e.response for e in first] != [e.response for e in other]
    by_user = {s.user_id: s for s in splits}
    for example in first:
        split = by_user[example.user_id]
        held_out = {split.valid, split.test}
        assert example.target not in held_out
        assert not held_out & set(example.candidates)
        assert not held_out & set(example.history)
        assert example.target in example.candidates
        label = example.prompt.labels[example.candidates.index(example.target)]
        assert example.response == label
    assert len({e.response for e in first}) > 3  # shuffled: the answer is not always "A"


class ListRetriever(FakeRetriever):
    """Retrieves a fixed per-call list so tests know exactly what the retriever said."""

    def __init__(self, catalog, n_retrieved):
        super().__init__(catalog)
        self.n_retrieved = n_retrieved
        self.calls = []

    def retrieve(self, history, query=None, n=20, exclude=None, transitions=None):
        # an int, or a function of the history (to mix hits and misses: the next item sits 5th here)
        limit = self.n_retrieved(history) if callable(self.n_retrieved) else self.n_retrieved
        out = super().retrieve(history, query, n=min(n, limit), exclude=exclude, transitions=transitions)
        self.calls.append((list(history), [i for i, _ in out], transitions))
        return out


def test_sft_candidates_keep_the_retrieval_order_and_skip_misses():
    dataset = make_dataset(n_users=20)
    splits = leave_one_out(dataset).splits
    retriever = ListRetriever(dataset.catalog, n_retrieved=lambda history: 5 if len(history) % 2 else 4)
    cfg = SFTDataConfig(retrieval={"n_candidates": 5, "collaborative_weight": 0}, prompt={"history": 4}, min_history=2, prefixes_per_user=4)
    stats = {}
    examples = build_sft_examples(dataset.catalog, splits, retriever, cfg, seed=0, stats=stats)
    said = {tuple(history): ids for history, ids, _ in retriever.calls}
    assert examples and stats["skipped_unretrieved"] > 0
    assert all(len(e.history) % 2 for e in examples)  # exactly the prefixes whose target was retrieved
    assert len(examples) == stats["target_retrieved"] == stats["prefixes"] - stats["skipped_unretrieved"]
    for example in examples:
        assert example.candidates == said[tuple(example.history)]  # the retriever's own order, untouched


def test_injected_targets_land_at_random_positions_not_last():
    dataset = make_dataset(n_users=20)
    splits = leave_one_out(dataset).splits
    cfg = SFTDataConfig(retrieval={"n_candidates": 4, "collaborative_weight": 0}, prompt={"history": 4}, min_history=2, prefixes_per_user=4,
                        unretrieved_target="inject")
    stats = {}
    examples = build_sft_examples(dataset.catalog, splits, ListRetriever(dataset.catalog, 4), cfg, seed=0, stats=stats)
    assert stats["injected"] > 10 and stats["skipped_unretrieved"] == 0
    positions = {e.candidates.index(e.target) for e in examples}
    assert len(positions) == 4 and all(len(e.candidates) == 4 for e in examples)


def test_sft_candidates_use_out_of_fold_transitions():
    """A user's own steps never reach the transitions that pick that user's SFT candidates."""
    from recgen.finetune.sft_data import out_of_fold_transitions, user_folds

    n_users, length = 10, 6
    items = [Item(str(i), f"Item {i}") for i in range(n_users * length)]
    sequences = {f"u{u}": [str(u * length + t) for t in range(length)] for u in range(n_users)}  # disjoint items
    dataset = Dataset("folds", Catalog(items), sequences)
    splits = leave_one_out(dataset).splits
    cfg = SFTDataConfig(retrieval={"n_candidates": 4}, min_history=2, prefixes_per_user=2, collaborative_folds=5)
    folds, fitted = out_of_fold_transitions(dataset.catalog, splits, cfg, seed=0)
    assert folds == user_folds(splits, 5, 0) and sorted(set(folds.values())) == list(range(5))
    for split in splits:
        rows = [dataset.catalog.index_of(i) for i in split.train]
        own = fitted[folds[split.user_id]].matrix[rows][:, rows]
        assert own.nnz == 0, split.user_id  # left out of its own fold's counts
        other = fitted[(folds[split.user_id] + 1) % 5].matrix[rows][:, rows]
        assert other.nnz > 0  # and counted in the others
    retriever = ListRetriever(dataset.catalog, 4)
    build_sft_examples(dataset.catalog, splits, retriever, cfg, seed=0)
    owner = {i: u for u, seq in sequences.items() for i in seq}
    for history, _, transitions in retriever.calls:
        assert transitions is fitted[folds[owner[history[0]]]] or \
            (transitions.matrix != fitted[folds[owner[history[0]]]].matrix).nnz == 0
    assert retriever.transitions is None  # passed per call, never set on the retriever


def test_only_the_label_token_is_supervised(tiny_lm):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm)
    dataset = make_dataset()
    examples = build_sft_examples(dataset.catalog, leave_one_out(dataset).splits, FakeRetriever(dataset.catalog),
                                  SFTDataConfig(retrieval={"n_candidates": 8}, prompt={"history": 4}, min_history=2), seed=0)
    row = encode_example(tokenizer, examples[0])
    supervised = [(i, t) for i, t in enumerate(row["labels"]) if t != IGNORE]
    assert len(supervised) == 1
    position, token = supervised[0]
    assert position == len(row["input_ids"]) - 1
    assert tokenizer.decode([token]) == examples[0].response
    # the prompt is exactly what the inference backend feeds the model
    from recgen.lm.transformers_backend import TransformersBackend

    backend = TransformersBackend.__new__(TransformersBackend)
    backend.tokenizer = tokenizer
    assert row["input_ids"][:-1] == backend.encode(examples[0].prompt)


def test_too_small_dataset_is_a_clear_error(tiny_lm, tmp_path):
    cfg = ranker_config(tiny_lm, tmp_path, batch_size=8, grad_accum=8)
    with pytest.raises(DataError, match="at least 64"):
        make_trainer(cfg, make_dataset(n_users=3, length=5))


def test_missing_base_model_is_a_clear_error(tiny_lm, tmp_path):
    from recgen.errors import ModelLoadError

    cfg = ranker_config(tiny_lm, tmp_path)
    cfg.lm = str(tmp_path / "no-such-model")
    with pytest.raises(ModelLoadError, match="no-such-model"):
        make_trainer(cfg)
    assert not (tmp_path / "run" / "adapter").exists()


# -- training, adapter, resume ----------------------------------------------------------------------------------
def test_tiny_run_writes_a_loadable_adapter_and_resumes(tiny_lm, tmp_path):
    from transformers import AutoModelForCausalLM

    from recgen.finetune.lora import check_adapter_config
    from recgen.lm.transformers_backend import load_adapter

    cfg = ranker_config(tiny_lm, tmp_path, max_steps=2)
    summary = make_trainer(cfg).train()
    assert summary["steps"] == 2
    assert summary["base_model"] == cfg.lm  # a user-given base is recorded as given
    out = Path(cfg.output_dir)
    adapter = out / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert not config.get("modules_to_save") and check_adapter_config(config) == []
    assert set(config["target_modules"]) == {"q_proj", "v_proj"}
    assert (adapter / "README.md").is_file() and (adapter / "recgen_config.json").is_file()
    assert (tmp_path / "results" / "metrics.json").is_file()
    base = AutoModelForCausalLM.from_pretrained(tiny_lm)
    vocab = base.get_input_embeddings().weight.shape[0]
    model = load_adapter(base, str(adapter))
    assert model.get_input_embeddings().weight.shape[0] == vocab
    assert any("lora_A" in name for name, _ in model.named_parameters())

    # resume: a new process-like trainer continues from step 2 to 3
    assert latest_checkpoint(out).name == "step-000002"
    resumed = make_trainer(ranker_config(tiny_lm, tmp_path, max_steps=3))
    summary = resumed.train(resume="latest")
    assert summary["steps"] == 3
    steps = [json.loads(line)["step"] for line in (out / "train_log.jsonl").read_text().splitlines()
             if json.loads(line).get("event") == "step"]
    assert steps == [1, 2, 3]

    # a corrupted or incomplete checkpoint is refused, naming the file
    checkpoint = latest_checkpoint(out)
    blob = checkpoint / "optimizer.safetensors"
    blob.write_bytes(blob.read_bytes()[:-7] + b"garbage")
    with pytest.raises(CheckpointError, match="optimizer.safetensors"):
        make_trainer(ranker_config(tiny_lm, tmp_path, max_steps=4)).train(resume=str(checkpoint))
    earlier = out / "checkpoints" / "step-000002"
    (earlier / "rng.json").unlink()
    with pytest.raises(CheckpointError, match="rng.json"):
        make_trainer(ranker_config(tiny_lm, tmp_path, max_steps=4)).resume(earlier)


def test_a_checkpoint_written_before_a_setting_was_added_still_resumes(tiny_lm, tmp_path):
    """A setting added since (retrieval.cold_neighbours and request_prior were constants) takes its default,
    which is what the run used: the upgrade does not refuse to resume it as "made with other settings"."""
    from recgen.atomic import write_manifest

    make_trainer(ranker_config(tiny_lm, tmp_path, max_steps=1)).train()
    checkpoint = latest_checkpoint(tmp_path / "run")
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    for name in ("cold_neighbours", "request_prior"):
        del state["config"]["data"]["retrieval"][name]
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    write_manifest(checkpoint)  # as the older version wrote it
    assert make_trainer(ranker_config(tiny_lm, tmp_path, max_steps=2)).train(resume=str(checkpoint))["steps"] == 2
    with pytest.raises(CheckpointError, match="other settings"):  # a real difference is still refused
        other = ranker_config(tiny_lm, tmp_path, max_steps=3)
        make_trainer(other.model_copy(update={"seed": other.seed + 1})).train(resume=str(checkpoint))


def test_atomic_folder_never_leaves_a_half_adapter(tmp_path):
    target = tmp_path / "adapter"

    def full_disk(tmp: Path) -> None:
        (tmp / "adapter_model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_folder(target, full_disk)
    assert not target.exists() and list(tmp_path.iterdir()) == []
    atomic_folder(target, lambda tmp: (tmp / "a.txt").write_text("ok"))
    with pytest.raises(OSError):
        atomic_folder(target, full_disk)
    assert (target / "a.txt").read_text() == "ok"  # the previous complete folder survives


# -- retriever pairs ---------------------------------------------------------------------------------------------
def test_retriever_pairs_use_training_items_only_and_batches_have_no_duplicates():
    from recgen.finetune.config import RetrieverFinetuneConfig
    from recgen.finetune.retriever import build_pairs, no_duplicate_batches

    dataset = make_dataset(n_users=12, length=9, n_items=20)
    splits = leave_one_out(dataset).splits
    cfg = RetrieverFinetuneConfig(name="t", dataset="tiny", output_dir="unused",
                                  train={"batch_size": 8, "pairs_per_user": 3, "history_items": 2})
    pairs = build_pairs(dataset.catalog, splits, cfg)
    assert pairs == build_pairs(dataset.catalog, splits, cfg)
    texts = {dataset.catalog.get(i).text(): i for i in dataset.catalog.ids}
    positives = {texts[p] for _, p in pairs}
    assert positives <= {i for s in splits for i in s.train}
    batches = no_duplicate_batches(pairs, 8, seed=0)
    for batch in batches:
        seen = [t for i in batch for t in pairs[i]]
        assert len(seen) == len(set(seen))
    assert sorted(i for b in batches for i in b) == sorted(set(i for b in batches for i in b))


# -- output_dir / results_dir: never a file recgen did not write (issue 22) --------------------------------------
def _plant(folder: Path, names) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_text(f"my own {name}")
    return {name: f"my own {name}" for name in names}


def _kept(folder: Path, planted: dict) -> bool:
    return all((folder / name).read_text() == text for name, text in planted.items())


RANKER_FOREIGN = [("run", "train_log.jsonl"), ("results", "metrics.json"), ("results", "MODEL_CARD.md"),
                  ("results", "train_log.jsonl"), ("results", "loss_curve.png")]
RETRIEVER_FOREIGN = [("run", "summary.json"), ("results", "metrics.json"), ("results", "README.md"),
                     ("results", "loss.json")]


@pytest.mark.parametrize("where,name", RANKER_FOREIGN)
def test_ranker_refuses_a_foreign_output_file_before_training(tiny_lm, tmp_path, where, name):
    from recgen.errors import UnsafeOverwriteError

    planted = _plant(tmp_path / where, [name])
    with pytest.raises(UnsafeOverwriteError, match=name):
        make_trainer(ranker_config(tiny_lm, tmp_path))
    assert _kept(tmp_path / where, planted)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize("where,name", RETRIEVER_FOREIGN)
def test_cli_finetune_retriever_refuses_a_foreign_output_file_before_training(tmp_path, where, name):
    import yaml
    from typer.testing import CliRunner

    from recgen.cli.finetune_cmd import finetune_app

    planted = _plant(tmp_path / where, [name])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"kind": "retriever", "name": "t", "dataset": "tiny",
                                      "output_dir": str(tmp_path / "run"), "results_dir": str(tmp_path / "results")}))
    result = CliRunner().invoke(finetune_app, ["retriever", "-c", str(recipe)])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and name in said and "recgen did not write" in said, result.output
    assert _kept(tmp_path / where, planted)


def test_results_are_rewritten_when_recgen_wrote_them_and_refused_otherwise(tmp_path):
    from recgen.errors import UnsafeOverwriteError
    from recgen.finetune.model_card import write_results

    out, results = tmp_path / "run", tmp_path / "results"
    (out / "adapter").mkdir(parents=True)
    (out / "adapter" / "README.md").write_text("card")
    write_results(results, out, {"steps": 1})
    write_results(results, out, {"steps": 2})  # its own files: rewritten
    assert json.loads((results / "metrics.json").read_text()) == {"steps": 2}
    assert (results / "MODEL_CARD.md").read_text() == "card"
    other = tmp_path / "other"
    planted = _plant(other, ["MODEL_CARD.md"])
    with pytest.raises(UnsafeOverwriteError, match="MODEL_CARD.md"):
        write_results(other, out, {"steps": 1})
    assert _kept(other, planted) and not (other / "metrics.json").exists()


def test_the_training_log_is_never_appended_to_a_foreign_file(tmp_path):
    from recgen.errors import UnsafeOverwriteError

    cfg = RankerFinetuneConfig(name="t", dataset="tiny", lm="unused", output_dir=str(tmp_path / "run"))
    planted = _plant(tmp_path / "run", ["train_log.jsonl"])
    with pytest.raises(UnsafeOverwriteError, match="train_log.jsonl"):
        RankerTrainer(cfg).log({"event": "step"})
    assert _kept(tmp_path / "run", planted)
    fresh = RankerTrainer(RankerFinetuneConfig(name="t", dataset="tiny", lm="unused", output_dir=str(tmp_path / "new")))
    fresh.log({"event": "step"})
    fresh.log({"event": "step"})
    assert len((tmp_path / "new" / "train_log.jsonl").read_text().splitlines()) == 2


def test_calibration_refuses_a_foreign_result_file_before_any_prompt(tmp_path, dataset):
    from recgen.errors import UnsafeOverwriteError
    from recgen.finetune.calibrate import calibrate

    planted = _plant(tmp_path / "cal", ["calibration_zero_shot.json"])
    with pytest.raises(UnsafeOverwriteError, match="calibration_zero_shot.json"):
        calibrate(dataset, None, users=2, out=str(tmp_path / "cal"), backend=object())
    assert _kept(tmp_path / "cal", planted)
