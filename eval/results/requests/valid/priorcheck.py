"""Validation: the popularity prior weight for requests without a history (the 'request' way)."""
import json
import sys

from recgen.config import RecgenConfig
from recgen.data import load_dataset
from recgen.evaluation.protocol import EvalData, sample_users
from recgen.evaluation.requests import evaluate_requests
from recgen.recommender import Recommender
from recgen.retrieval.cache import index_folder

name, users = sys.argv[1], int(sys.argv[2])
data = EvalData.from_dataset(load_dataset(name))
cat = data.dataset.catalog
rec = Recommender.from_dataset(data.train_dataset(), RecgenConfig(), index_dir=index_folder(data.dataset.name, cat.fingerprint(), None))
positions = sample_users(data.n_users, users, 0)
out = {"command": "python /tmp/runs/priorcheck.py " + " ".join(sys.argv[1:])}
for w in [float(x) for x in sys.argv[3].split(",")]:
    rec.retriever.request_prior = w
    def recommend(history, query, k):
        if history:  # only the request-alone way is affected; skip the other ways' cost
            return []
        return [i for i, _ in rec.retriever.retrieve(history, query, n=k)]
    res = evaluate_requests(recommend, data, positions, seed=0, stage="valid")
    out[str(w)] = {kind: v["request"] for kind, v in res["summary"].items()}
    print(w, out[str(w)], flush=True)
print(json.dumps(out))
