"""Growing a catalog in place of a rebuild: the merged catalog and the transition matrix padded for new items.

A new item has no interactions, so its transition rows and columns are zero: it is found by its text until
the learned stages are re-fitted.
"""

from __future__ import annotations

import scipy.sparse as sp

from ..data.catalog import Catalog, Item
from ..errors import DataError
from .collaborative import ItemTransitions


def items_from_rows(rows) -> list[Item]:
    """Items from :class:`Item` objects or field dicts (JSON objects); a bad one is a :class:`DataError` that
    names its position."""
    if not isinstance(rows, (list, tuple)):
        raise DataError(f"items must be a list of objects, not {type(rows).__name__}")
    out = []
    for n, row in enumerate(rows):
        if isinstance(row, Item):
            out.append(row)
            continue
        if not isinstance(row, dict):
            raise DataError(f"item {n}: must be an object with 'item_id' and 'title', not {type(row).__name__}")
        try:
            item = Item.from_dict(row)
        except DataError as exc:
            raise DataError(f"item {n}: {exc}") from None
        if not row.get("title") or not str(row.get("title")).strip():
            raise DataError(f"item {n} ({item.item_id!r}): a new item needs a 'title' (it is what is embedded)")
        out.append(item)
    return out


def merged_catalog(catalog: Catalog, items: list[Item], *, update: bool = False) -> tuple[Catalog, list[int], list[int]]:
    """(the catalog with ``items``, rows of the new items, rows of the updated ones). An id already in the
    catalog is a :class:`DataError` unless ``update``; an id twice in ``items`` is always one."""
    if not items:
        raise DataError("no items to add")
    seen: set[str] = set()
    twice = [i.item_id for i in items if i.item_id in seen or seen.add(i.item_id)]
    if twice:
        raise DataError(f"item id(s) given twice: {', '.join(map(repr, twice[:5]))}")
    existing = [i.item_id for i in items if i.item_id in catalog]
    if existing and not update:
        raise DataError(f"item id(s) already in the catalog: {', '.join(map(repr, existing[:5]))}; "
                        "pass update=True (--update, \"update\": true) to replace them")
    rows = list(catalog.items)
    updated = []
    for item in items:
        if item.item_id in catalog:
            row = catalog.index_of(item.item_id)
            rows[row] = item
            updated.append(row)
    new = [i for i in items if i.item_id not in catalog]
    merged = Catalog(rows + new)
    return merged, list(range(len(catalog), len(catalog) + len(new))), updated


def grown_transitions(transitions: ItemTransitions | None, n_items: int) -> ItemTransitions | None:
    """``transitions`` with zero rows and columns up to ``n_items``."""
    if transitions is None or transitions.matrix.shape[0] == n_items:
        return transitions
    matrix = transitions.matrix.copy().tocsr()
    matrix.resize((n_items, n_items))
    return ItemTransitions(sp.csr_matrix(matrix), transitions.params)
