"""Property-based fuzzing of the batch line parser: random bytes and random JSON shapes (biased towards both
request formats) give either a request that can be written back out, or a RecgenError, never another exception.

``make test`` runs a bounded number of examples; set RECGEN_FUZZ_EXAMPLES (e.g. 5000) for a longer hunt.
"""

from __future__ import annotations

import json
import os
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recgen.batch import errors_file as berr
from recgen.batch import requests as breq
from recgen.batch import results as bres
from recgen.errors import RecgenError, UnknownUserError
from recgen.types import Recommendation

EXAMPLES = int(os.environ.get("RECGEN_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

text = st.text(alphabet=st.characters(codec=None), max_size=12)  # lone surrogates included
scalars = st.none() | st.booleans() | st.integers(-(10 ** 30), 10 ** 30) | st.floats() | text
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(text, inner, max_size=4), max_leaves=12)
ids = st.sampled_from(["1", "u1", "", 3, 0, -1, True]) | json_values
part = st.fixed_dictionaries({}, optional={"type": st.sampled_from(["text", "image_url", None]) | json_values,
                                           "text": text | json_values})
message = st.fixed_dictionaries({}, optional={
    "role": st.sampled_from(["user", "system", "assistant", "tool", "robot"]) | json_values,
    "content": st.none() | text | st.lists(part, max_size=3) | json_values})
recgen_fields = {"user": ids, "history": st.lists(ids, max_size=3) | json_values, "query": text | json_values,
                 "k": st.integers(-2, 30) | json_values, "mode": st.sampled_from(["score", "generate", "beam"]),
                 "reasons": st.booleans() | json_values, "exclude": st.lists(ids, max_size=3) | json_values}
own = st.fixed_dictionaries({}, optional={"custom_id": ids, **recgen_fields, "extra": json_values})
chat_body = st.fixed_dictionaries({"messages": st.lists(message, max_size=4) | json_values},
                                  optional={**recgen_fields, "model": text, "temperature": json_values})
openai = st.fixed_dictionaries({
    "custom_id": ids,
    "method": st.sampled_from(["POST", "post", "GET"]) | json_values,
    "url": st.sampled_from([breq.RECOMMENDATIONS_URL, breq.CHAT_URL, "/v1/embeddings"]) | json_values,
    "body": st.fixed_dictionaries({}, optional={"model": text, **recgen_fields}) | chat_body | json_values,
}, optional={"extra": json_values})
shapes = own | openai | json_values


def _check(line: str) -> breq.BatchRequest | None:
    """The property: a BatchRequest that survives writing, or a RecgenError."""
    try:
        request = breq.parse_line(line, 1)
    except RecgenError:
        return None
    rec = Recommendation(item_id="1", title="T", rank=1, score=0.0)
    for result in (bres.output_line(request, [rec]), bres.output_line(request, error=UnknownUserError("no"))):
        assert json.loads(result.encode("utf-8"))["custom_id"] == request.custom_id
    assert breq.BatchRequest.from_row(request.to_row()) == request
    return request


@FUZZ
@given(shapes)
def test_json_shapes_parse_or_raise_recgen_error(data):
    try:
        line = json.dumps(data, allow_nan=True)
    except (ValueError, RecursionError):
        return
    _check(line)


@FUZZ
@given(shapes, st.integers(0, 10_000), st.binary(max_size=4))
def test_mutated_lines_parse_or_raise_recgen_error(data, at, junk):
    line = json.dumps(data)
    cut = at % (len(line) + 1)
    mutated = line[:cut] + junk.decode("latin-1") + line[cut + len(junk):]
    _check(mutated)


@FUZZ
@given(st.lists(st.binary(max_size=60) | shapes.map(lambda d: json.dumps(d).encode("utf-8", "surrogatepass")),
                max_size=6))
def test_random_files_never_stop_the_reader(chunks):
    raw = b"\n".join(chunks)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "in.jsonl")
        with open(path, "wb") as handle:
            handle.write(raw)
        requests, errors = breq.read_requests(path)
    assert len(requests) + len(errors) <= raw.count(b"\n") + 1
    assert all(isinstance(e["line"], int) and e["error"] for e in errors)
    for error in errors:  # every error record can be written to the errors file
        berr._error_json(error).encode("utf-8")
    assert len({r.custom_id for r in requests}) == len(requests)
