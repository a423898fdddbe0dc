"""Shared by the schemathesis fuzz tests: run one operation's generated cases and collect the statuses."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings


def fuzz_statuses(strategy, headers: dict, examples: int, negative: bool = False) -> list[int]:
    """Call every generated case (deterministic: derandomized, no example database); a 5xx fails the test, and
    with ``negative`` (schema-violating cases) anything but a 4xx does.

    Schema-valid is not enough to be accepted (item ids must be in the catalog, a query within the limit, a chat
    must hold a user message): those answer 4xx, which is right, so the positive-acceptance check is off. A
    schema-violating body can also be too large (413 before it is parsed): any 4xx is a rejection, so
    schemathesis's own rejection check (which does not count 413) is replaced by that."""
    sent: list[int] = []

    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def fuzz(case):
        response = case.call_and_validate(headers=headers,
                                          excluded_checks=[schemathesis.checks.positive_data_acceptance,
                                                           schemathesis.checks.negative_data_rejection])
        sent.append(response.status_code)
        assert response.status_code < 500, response.text
        if negative:
            assert 400 <= response.status_code < 500, f"schema-violating request answered {response.status_code}"

    fuzz()
    return sent
