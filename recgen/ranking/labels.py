"""Single-token labels under which candidates appear in the prompt (the verbalizer's vocabulary)."""

import string

LABELS = tuple(string.ascii_uppercase)


def labels_for(n: int) -> list[str]:
    if n > len(LABELS):
        raise ValueError(f"at most {len(LABELS)} candidates can be labelled, got {n}")
    return list(LABELS[:n])
