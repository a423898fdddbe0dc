"""Check a LightGBM text model in Python before LightGBM parses it: a native abort must be impossible from a file.

LightGBM's parser trusts its input. With ``tree_sizes`` in the header it parses the trees in an OpenMP loop, where
any format error is a C++ exception that cannot leave the loop: ``terminate`` aborts the whole process (SIGABRT),
so the CLI or the server dies without a message. Other edits (a child index past the tree, a split on a feature
the model does not have, a loop between nodes) load without complaint and read out of bounds or never finish at
predict time. :func:`checked_model_text` refuses all of these with a :class:`ModelLoadError` naming the file and
the problem, and returns the text without ``tree_sizes`` so that whatever it might still miss is parsed serially,
where LightGBM raises an error instead of aborting. What follows ``end of trees`` (feature importances, the
training parameters) is not needed to predict and is dropped: LightGBM reads past the end of a parameters
section cut short (a segfault).

recgen's rankers are numerical, non-linear trees; a model with categorical splits or linear leaves is refused
rather than checked half-way.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

from ...errors import ModelLoadError

_END = "end of trees"
#: Per-node arrays (one value per internal node) and per-leaf arrays, as LightGBM v4 writes them.
_NODE_INTS = ("split_feature", "decision_type", "left_child", "right_child", "internal_count")
_NODE_FLOATS = ("split_gain", "threshold", "internal_value", "internal_weight")
_LEAF_INTS = ("leaf_count",)
_LEAF_FLOATS = ("leaf_value", "leaf_weight")
_REQUIRED = ("num_leaves", "split_feature", "threshold", "decision_type", "left_child", "right_child", "leaf_value")
_CATEGORICAL = 1
#: Numbers as LightGBM writes them (ASCII only: Python's int() and float() also take "1_0", "１" or "nan").
_INT = re.compile(r"-?[0-9]+")
_FLOAT = re.compile(r"[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?")
_TREE = re.compile(r"^Tree=(\d+)$")


class _Bad(Exception):
    """One problem in the model text (turned into a ModelLoadError naming the file)."""


def checked_model_text(path: Path, text: str) -> str:
    """``text`` without its ``tree_sizes`` line, once every tree in it is checked; else a ModelLoadError."""
    try:
        return _check(text)
    except _Bad as exc:
        raise ModelLoadError(f"{path} is not a valid LightGBM ranker ({exc}); refit it with `recgen fit`") from None


def _check(text: str) -> str:
    end = text.find("\n" + _END)
    if not text.startswith("tree\n") or end < 0:
        raise _Bad("no 'tree' header or no 'end of trees' line")
    first = text.find("\nTree=")
    trees_at = first + 1 if 0 <= first < end else end + 1
    header = _fields(text[:trees_at].splitlines()[1:], "header")
    n_features = _int(header, "max_feature_idx", "header", low=0) + 1
    names = header.get("feature_names", "").split(" ")
    if len(names) != n_features:
        raise _Bad(f"{len(names)} feature names for max_feature_idx={n_features - 1}")
    _int(header, "num_class", "header", low=1)
    _int(header, "num_tree_per_iteration", "header", low=1)
    blocks = _tree_blocks(text[trees_at:end + 1])
    if "tree_sizes" in header:
        sizes = header["tree_sizes"].split(" ") if header["tree_sizes"] else []
        actual = [str(len(block.encode("utf-8"))) for block in blocks]
        if sizes != actual:
            raise _Bad(f"tree_sizes in the header ({_short(sizes)}) do not match the trees' byte lengths "
                       f"({_short(actual)}): the file was edited or damaged")
    for n, block in enumerate(blocks):
        lines = block.splitlines()
        match = _TREE.match(lines[0])
        if not match or int(match.group(1)) != n:
            raise _Bad(f"tree {n} starts with {lines[0][:40]!r}, not 'Tree={n}'")
        _check_tree(_fields(lines[1:], f"tree {n}"), n_features, f"tree {n}")
    header_text = re.sub(r"^tree_sizes=.*\n", "", text[:trees_at], count=1, flags=re.M)
    return header_text + text[trees_at:end + 1] + _END + "\n"


def _tree_blocks(section: str) -> list[str]:
    """The trees as LightGBM counts their bytes: each from its ``Tree=`` line up to the next one."""
    if not section.strip():
        return []
    starts = [m.start() for m in re.finditer(r"^Tree=", section, flags=re.M)]
    if not starts or section[:starts[0]].strip():
        raise _Bad("text between the header and the first tree")
    return [section[a:b] for a, b in zip(starts, starts[1:] + [len(section)])]


def _fields(lines: list[str], where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        if not line.strip() or "=" not in line and line.strip() in ("average_output", "linear_tree"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            raise _Bad(f"{where}: line {line[:40]!r} is not key=value")
        if key in out:
            raise _Bad(f"{where}: {key} is given twice")
        out[key] = value
    return out


def _check_tree(fields: dict[str, str], n_features: int, where: str) -> None:
    missing = [k for k in _REQUIRED if k not in fields]
    if missing:
        raise _Bad(f"{where} has no {', '.join(missing)}")
    leaves = _int(fields, "num_leaves", where, low=1)
    if "num_cat" in fields and _int(fields, "num_cat", where, low=0):
        raise _Bad(f"{where} has categorical splits, which recgen's rankers never have")
    if fields.get("is_linear", "0") != "0":
        raise _Bad(f"{where} has linear leaves, which recgen's rankers never have")
    arrays = {}
    for names, kind, size in ((_NODE_INTS, int, leaves - 1), (_NODE_FLOATS, float, leaves - 1),
                              (_LEAF_INTS, int, leaves), (_LEAF_FLOATS, float, leaves)):
        for name in names:
            if name in fields:
                values = _numbers(fields[name], kind, f"{where} {name}", infinite=name == "threshold")
                optional_empty = leaves == 1 and not values and name != "leaf_value"
                if len(values) != size and not optional_empty:
                    raise _Bad(f"{where}: {name} has {len(values)} values for num_leaves={leaves} (expected {size})")
                arrays[name] = values
    _numbers(fields.get("shrinkage", "1"), float, f"{where} shrinkage")
    bad = [f for f in arrays["split_feature"] if not 0 <= f < n_features]
    if bad:
        raise _Bad(f"{where}: split_feature {bad[0]} is not a feature of this model (0..{n_features - 1})")
    for decision in arrays["decision_type"]:
        if not 0 <= decision < 12 or decision & _CATEGORICAL:  # bit 0 categorical, bit 1 default left, 2-3 missing
            raise _Bad(f"{where}: decision_type {decision} is not a numerical split")
    _check_links(arrays["left_child"], arrays["right_child"], leaves, where)


def _check_links(left: list[int], right: list[int], leaves: int, where: str) -> None:
    """The children must form one tree from node 0: every node and leaf reached exactly once (no index out of
    range, no loop that would make a prediction walk forever)."""
    if leaves == 1:
        return
    seen_nodes, seen_leaves, todo = {0}, set(), [0]
    while todo:
        node = todo.pop()
        for child in (left[node], right[node]):
            if child >= 0:
                if child >= leaves - 1 or child in seen_nodes:
                    raise _Bad(f"{where}: node {node} points to node {child}, "
                               + ("past the tree" if child >= leaves - 1 else "already in the tree (a loop)"))
                seen_nodes.add(child)
                todo.append(child)
            else:
                leaf = ~child
                if leaf >= leaves or leaf in seen_leaves:
                    raise _Bad(f"{where}: node {node} points to leaf {leaf}, "
                               + ("past the tree" if leaf >= leaves else "reached twice"))
                seen_leaves.add(leaf)
    if len(seen_nodes) != leaves - 1 or len(seen_leaves) != leaves:
        raise _Bad(f"{where}: {leaves - 1 - len(seen_nodes)} node(s) and {leaves - len(seen_leaves)} leaf(s) are "
                   "not reachable from the root")


def _int(fields: dict[str, str], key: str, where: str, low: int) -> int:
    if key not in fields:
        raise _Bad(f"{where} has no {key}")
    value = _numbers(fields[key], int, f"{where} {key}")
    if len(value) != 1 or value[0] < low:
        raise _Bad(f"{where}: {key}={fields[key][:40]!r} is not a whole number >= {low}")
    return value[0]


def _numbers(text: str, kind: type, where: str, infinite: bool = False) -> list:
    """The numbers of a field; ``infinite``: ``inf`` / ``-inf`` are numbers here (a split threshold: LightGBM
    writes ``inf`` for a split that sends every number one way and missing values (NaN) the other, and reads it
    back). NaN is never a number."""
    if not text:
        return []
    parts = text.split(" ")
    pattern = _INT if kind is int else _FLOAT
    for part in parts:
        if infinite and part in ("inf", "-inf"):
            continue
        if not pattern.fullmatch(part):
            if kind is float and part.lstrip("+-").lower() in ("nan", "inf", "infinity", "-nan(ind)", "nan(ind)"):
                raise _Bad(f"{where} holds {part!r}: every number must be finite")
            raise _Bad(f"{where}: {part[:40]!r} is not a {'whole number' if kind is int else 'number'}")
    values = [kind(part) for part in parts]
    if kind is float and not infinite and not all(math.isfinite(v) for v in values):
        raise _Bad(f"{where} holds a number too large to be finite")
    return values


def _short(values: list[str]) -> str:
    return " ".join(values[:5]) + (" …" if len(values) > 5 else "")
