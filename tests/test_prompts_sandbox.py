"""Prompt templates come from a config's ``prompt.prompts_dir``, so they are untrusted: known Jinja2 escapes
to ``os`` must run nothing and fail as ConfigError, and the shipped templates must render exactly as before
the sandbox (golden text in tests/fixtures/prompts/shipped_renders.json, recorded with the unsandboxed
environment)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from recgen.errors import ConfigError
from recgen.lm.templates import chat, default_prompts_dir, render

GOLDEN = Path(__file__).parent / "fixtures" / "prompts" / "shipped_renders.json"

# Each runs `touch {marker}` through a different route to os when rendered by a plain jinja2.Environment.
ESCAPES = {
    "cycler_globals": "{{{{ cycler.__init__.__globals__.os.system('touch {marker}') }}}}",
    "joiner_popen": "{{{{ joiner.__init__.__globals__.os.popen('touch {marker}').read() }}}}",
    "namespace_globals": "{{{{ namespace.__init__.__globals__.os.system('touch {marker}') }}}}",
    "lipsum_globals": "{{{{ lipsum.__globals__.os.system('touch {marker}') }}}}",
    "self_builtins_import": "{{{{ self.__init__.__globals__.__builtins__.__import__('os').system('touch {marker}') }}}}",
    "attr_filter": "{{{{ (cycler|attr('__init__')|attr('__globals__'))['os'].system('touch {marker}') }}}}",
    "set_then_call": "{{% set g = cycler.__init__.__globals__ %}}{{{{ g.os.system('touch {marker}') }}}}",
    "in_condition": "{{% if cycler.__init__.__globals__.os.system('touch {marker}') %}}x{{% endif %}}",
}


def _folder(tmp_path: Path, rank_text: str, system_text: str | None = None) -> Path:
    folder = tmp_path / "prompts"
    folder.mkdir()
    shutil.copy(default_prompts_dir() / "reason.jinja", folder / "reason.jinja")
    (folder / "system.jinja").write_text(system_text or (default_prompts_dir() / "system.jinja").read_text())
    (folder / "rank.jinja").write_text(rank_text)
    return folder


@pytest.mark.parametrize("escape", sorted(ESCAPES))
def test_crafted_templates_run_nothing_and_are_a_config_error(tmp_path, escape):
    marker = tmp_path / "pwned"
    folder = _folder(tmp_path, ESCAPES[escape].format(marker=marker))
    with pytest.raises(ConfigError, match=r"rank\.jinja"):
        chat("rank", str(folder), history=[], query="", candidates=[], listing=False, k=1)
    assert not marker.exists()


def test_an_escape_in_the_system_template_is_refused_too(tmp_path):
    marker = tmp_path / "pwned"
    folder = _folder(tmp_path, "{{ query }}", system_text=ESCAPES["cycler_globals"].format(marker=marker))
    with pytest.raises(ConfigError, match=r"system\.jinja"):
        chat("rank", str(folder), query="q")
    assert not marker.exists()


def test_templates_cannot_change_the_values_they_are_given(tmp_path):
    history = ["Heat"]
    folder = _folder(tmp_path, "{{ history.append('Injected') }}{{ history }}")
    with pytest.raises(ConfigError, match=r"rank\.jinja"):
        render("rank", str(folder), history=history)
    assert history == ["Heat"]


def test_format_strings_cannot_reach_globals(tmp_path):
    folder = _folder(tmp_path, "{{ '{0.__init__.__globals__}'.format(cycler) }}")
    with pytest.raises(ConfigError, match=r"rank\.jinja"):
        render("rank", str(folder))


def test_syntax_and_undefined_errors_name_the_template(tmp_path):
    broken = _folder(tmp_path, "{% for x in %}")
    with pytest.raises(ConfigError, match=r"rank\.jinja.*line 1"):
        render("rank", str(broken))
    other = tmp_path / "other"
    other.mkdir()
    (other / "rank.jinja").write_text("{{ missing_value }}")
    with pytest.raises(ConfigError, match=r"rank\.jinja.*missing_value"):
        render("rank", str(other))


def test_shipped_prompts_render_exactly_as_before_the_sandbox():
    golden = json.loads(GOLDEN.read_text())
    assert golden  # rank with/without history, query and listing; reason with and without history; system
    for case in golden.values():
        assert render(case["template"], None, **case["values"]) == case["text"]


@pytest.mark.parametrize("text", ["{% for i in range(10**9) %}{% endfor %}", "{{ 1 / 0 }}", "{{ [][1] }}",
                                  "{{ 'x' * 10**9 }}", "{{ 7 ** 10000000 }}", "{{ [1] * 10**8 }}",
                                  "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}"])
def test_a_template_that_fails_or_grows_without_bound_is_a_config_error_at_once(tmp_path, text):
    """Regression (issue 22): range(10**9) escaped as a raw OverflowError traceback; * and ** were unbounded."""
    folder = _folder(tmp_path, text)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"rank\.jinja"):
        render("rank", str(folder))
    assert time.perf_counter() - started < 5
