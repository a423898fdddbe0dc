"""Issue 12 robustness (a): a corpus of bad files walked through every loader; only RecgenError may escape.

The corpus (tests/fixtures/bad_data.py) is every on-disk format x every file x every mutation (bad
encodings, BOMs, truncation, wrong types, huge fields, empty files, missing columns, duplicate ids,
nan/inf, binary garbage, ...) plus JSON rows of the wrong types, generated into tmp_path.
"""

from __future__ import annotations

import pytest
from fixtures.bad_data import VALID, corpus, exercise, write_dataset

from recgen.errors import RecgenError

CASES = corpus()


@pytest.mark.parametrize("fmt", sorted(VALID))
def test_valid_baselines_load(tmp_path, fmt):
    exercise(write_dataset(tmp_path / fmt, VALID[fmt]))


def test_corpus_only_raises_recgen_errors(tmp_path):
    """One test over the whole corpus so its size is cheap; failures list every case that leaked."""
    leaked, outcomes = [], {"loaded": 0, "DataError": 0}
    for number, (label, files) in enumerate(CASES):
        folder = write_dataset(tmp_path / f"case{number}", files)
        try:
            exercise(folder)
            outcomes["loaded"] += 1
        except RecgenError as exc:
            outcomes[type(exc).__name__] = outcomes.get(type(exc).__name__, 0) + 1
            assert str(exc), label
        except BaseException as exc:  # noqa: BLE001 - the point is to catch everything else
            leaked.append(f"{label}: {type(exc).__name__}: {str(exc)[:160]}")
    print(f"\nbad-input corpus: {len(CASES)} inputs, outcomes {outcomes}")
    assert not leaked, f"{len(leaked)} of {len(CASES)} inputs leaked a non-RecgenError:\n" + "\n".join(leaked)
    assert len(CASES) >= 300
