"""Issue 12 robustness (b): property-based fuzzing of every loader; whatever the bytes, only RecgenError escapes.

Bounded by default (``RECGEN_FUZZ_EXAMPLES``, default 40 examples per property); raise it for release
checks, e.g. ``RECGEN_FUZZ_EXAMPLES=5000 pytest tests/test_robust_data_fuzz.py``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path

from fixtures.bad_data import VALID, exercise, write_dataset
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recgen.data import Catalog
from recgen.errors import RecgenError

EXAMPLES = int(os.environ.get("RECGEN_FUZZ_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 40,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FILES = [(fmt, name) for fmt, files in VALID.items() for name in files]


def only_recgen_errors(files: dict[str, bytes]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_dataset(Path(tmp) / "d", files)
        try:
            exercise(folder)
        except RecgenError as exc:
            assert str(exc)


# bytes biased towards the characters that matter to the parsers
SPECIAL = st.sampled_from([b"\n", b"\r", b"\t", b",", b"|", b'"', b"{", b"}", b"[", b"]", b":", b"\\", b"\x00",
                           b"\xef\xbb\xbf", b"\xff", b"\xc3", b"nan", b"inf", b"-", b"1e999", b"item_id", b"user",
                           b"item", b"timestamp", b"asin\ttitle\n", b"a", b"u1", b"1"])
NOISY_BYTES = st.lists(st.one_of(SPECIAL, st.binary(max_size=8)), max_size=60).map(b"".join)


@FUZZ
@given(target=st.sampled_from(FILES), data=st.one_of(st.binary(max_size=512), NOISY_BYTES))
def test_random_bytes_in_any_file(target, data):
    fmt, name = target
    only_recgen_errors({**VALID[fmt], name: data})


@FUZZ
@given(target=st.sampled_from(FILES), data=st.data())
def test_random_edits_of_a_valid_file(target, data):
    """Splice random bytes into a valid file (most inputs stay near-valid, reaching the deeper checks)."""
    fmt, name = target
    original = VALID[fmt][name]
    start = data.draw(st.integers(0, len(original)))
    end = data.draw(st.integers(start, len(original)))
    mutated = original[:start] + data.draw(NOISY_BYTES) + original[end:]
    only_recgen_errors({**VALID[fmt], name: mutated})


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                         st.text(max_size=20))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(st.text(max_size=5), inner, max_size=4)),
                           max_leaves=12)
KEYS = st.sampled_from(["item_id", "title", "genres", "categories", "year", "description", "other"])
ROWS = st.one_of(st.dictionaries(KEYS, JSON_VALUES, max_size=6), JSON_VALUES)


@FUZZ
@given(rows=st.lists(ROWS, min_size=0, max_size=8))
def test_random_json_rows_in_items_jsonl(rows):
    text = "".join(json.dumps(row) + "\n" for row in rows)
    only_recgen_errors({**VALID["generic-jsonl"], "items.jsonl": text.encode("utf-8", "surrogatepass")})
    try:
        Catalog.from_jsonl_text(text).fingerprint()
    except RecgenError:
        pass


CELLS = st.one_of(st.sampled_from(["a", "b", "c", "u1", "", " ", "nan", "inf", "1e400", "-1", "0", "3.5"]),
                  st.text(max_size=6))


@FUZZ
@given(header=st.lists(st.sampled_from(["user", "item", "timestamp", "x", ""]), max_size=4),
       rows=st.lists(st.lists(CELLS, max_size=5), max_size=10))
def test_random_interaction_tables(header, rows):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows(rows)
    only_recgen_errors({**VALID["generic-jsonl"], "interactions.csv": out.getvalue().encode("utf-8", "surrogatepass")})
