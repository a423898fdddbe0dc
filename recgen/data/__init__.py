"""Catalogs, interaction data, loaders and the leave-one-out split."""

from .catalog import Catalog, Item
from .dataset import Dataset
from .loaders import load_amazon_sequences, load_catalog_file, load_dataset, load_generic, load_movielens_100k
from .split import LeaveOneOut, UserSplit, leave_one_out

__all__ = [
    "Catalog", "Item", "Dataset", "LeaveOneOut", "UserSplit", "leave_one_out", "load_dataset",
    "load_movielens_100k", "load_amazon_sequences", "load_generic", "load_catalog_file",
]
