"""Check: neighbour-borrowed transitions for cold items, on (a) cold-item users, (b) warm validation users."""
import json
import sys

from recgen.data import load_dataset
from recgen.evaluation.cold import cold_items, paired, ranks_of, summary_of
from recgen.evaluation.protocol import EvalData, sample_users
from recgen.evaluation.systems import make_system

name, share = sys.argv[1], float(sys.argv[2])
data = EvalData.from_dataset(load_dataset(name))
out = {"command": "python /tmp/runs/coldcheck.py " + " ".join(sys.argv[1:])}
cold = cold_items(data, share, 0)
warm_pos = sample_users(data.n_users, 2000, 0)
for k in (0, 10):
    s = make_system("retrieval")
    s.fit(cold.data)
    s.retriever.cold_neighbours = k
    r = ranks_of(s, cold.data, cold.positions)
    out[f"cold_items_hybrid_k{k}"] = summary_of(r)
    w = make_system("retrieval")
    w.fit(data)
    w.retriever.cold_neighbours = k
    out[f"_warm{k}"] = ranks_of(w, data, warm_pos)  # valid stage below
    from recgen.evaluation.protocol import evaluate_users
    rows = [row for b in evaluate_users(w, data, "valid", warm_pos) for row in b]
    out[f"warm_valid_hybrid_k{k}"] = summary_of([row["rank"] for row in rows])
    out[f"_wr{k}"] = [row["rank"] for row in rows]
out["warm_valid_k10_vs_k0"] = paired(out.pop("_wr10"), out.pop("_wr0"))
out.pop("_warm0")
out.pop("_warm10")
print(json.dumps(out, indent=1))
