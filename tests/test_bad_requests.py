"""Bad input to the Python API, the saved-recommender loader, config files and the CLI: a RecgenError (or exit
code 2) naming the problem, never a raw pydantic / JSON / yaml / numpy exception (issue 12 #7, #8)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from recgen import RecgenConfig, Recommender
from recgen.errors import ConfigError, DataError, InvalidRequestError, RecgenError


@pytest.mark.parametrize("kwargs, fragment", [
    ({"k": 0}, "k"), ({"k": -1}, "k"), ({"k": 2.5}, "k"), ({"mode": "bogus"}, "mode"),
    ({"history": "50"}, "history"), ({"exclude": 7}, "exclude"), ({"query": ["a"]}, "query"),
])
def test_bad_recommend_arguments_are_invalid_request_errors(tiny_recommender, kwargs, fragment):
    with pytest.raises(InvalidRequestError, match=fragment):
        tiny_recommender.recommend(**{"history": ["1"], **kwargs})


def test_bad_requests_in_a_batch_come_back_in_place(tiny_recommender):
    out = tiny_recommender.recommend_batch([{"history": ["1"], "k": 2, "reasons": False}, {"k": "many"}, "oops",
                                            {"history": ["1"], "mode": "bogus"}], return_exceptions=True)
    assert len(out[0]) == 2
    assert all(isinstance(x, InvalidRequestError) for x in out[1:])


@pytest.fixture()
def saved(tiny_recommender, tmp_path):
    tiny_recommender.save(tmp_path / "rec")
    return tmp_path / "rec"


@pytest.mark.parametrize("name, content", [
    ("config.json", b"{not json"), ("config.json", b"[1, 2]"), ("config.json", b'{"retrieval": {"n_candidates": 99}}'),
    ("config.json", b"\xff\xfe bad bytes"), ("popularity.json", b"{broken"), ("popularity.json", b'{"a": 1}'),
    ("popularity.json", b'["no-such-item"]'), ("transitions.npz", b"not a zip file"), ("transitions.npz", b""),
    ("catalog.jsonl", b'{"item_id": "1", "title": "x"}\n\xff\n'),
])
def test_a_corrupt_saved_recommender_is_a_clear_error(saved, tiny_backend, name, content):
    (saved / name).write_bytes(content)
    with pytest.raises(RecgenError) as err:
        Recommender.load(saved, backend=tiny_backend)
    assert name in str(err.value)


def test_transitions_of_another_catalog_are_refused(saved, tiny_backend):
    from builders import make_catalog

    from recgen.retrieval.collaborative import ItemTransitions

    ItemTransitions.fit(make_catalog(7), [["1", "2", "3"]]).save(saved / "transitions.npz")
    with pytest.raises(DataError, match="7x7 matrix"):
        Recommender.load(saved, backend=tiny_backend)


@pytest.mark.parametrize("text", ["retrieval: [unclosed", "- a\n- b\n", "prompt:\n  history: many\n", "\tbad: tab"])
def test_malformed_yaml_config_is_a_config_error(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="config.yaml"):
        RecgenConfig.from_file(path)


def test_cli_k_out_of_range_exits_2():
    from recgen.cli.main import app

    for args in (["demo", "-k", "0"], ["recommend", "-k", "0"], ["recommend", "-k", "27"]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output
