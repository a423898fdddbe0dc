"""recgen: a ranked list of real catalog items, each with a natural-language reason."""

from .config import RecgenConfig  # noqa: E402
from .data import Catalog, Dataset, Item, leave_one_out, load_dataset  # noqa: E402
from .errors import RecgenError  # noqa: E402
from .recommender import Recommender  # noqa: E402
from .types import Recommendation, RecommendRequest  # noqa: E402
from .version import __version__  # noqa: E402

__all__ = ["Recommender", "RecgenConfig", "Recommendation", "RecommendRequest", "Catalog", "Dataset", "Item",
           "load_dataset", "leave_one_out", "RecgenError", "__version__"]
