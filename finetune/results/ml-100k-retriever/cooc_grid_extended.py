import json, sys, torch
torch.set_num_threads(1)
from recgen.data import load_dataset, leave_one_out
from recgen.finetune.config import load_retriever_config
from recgen.finetune.retriever import cooccurrence, cooc_scores, user_scores, recall_at, _stage
from recgen.retrieval.embedder import embed, load_embedder
cfg = load_retriever_config("finetune/ml-100k-retriever.yaml")
ds = load_dataset("ml-100k"); cat = ds.catalog
splits = sorted(leave_one_out(ds).splits, key=lambda s: s.user_id)
emb = embed(load_embedder(None), [i.text() for i in cat])
cooc = cooccurrence(cat, splits)
rows = []
for w in (0.7, 0.8, 0.9, 1.0):
    r = {"weight": w}
    for stage in ("valid", "test"):
        h, t = _stage(splits, stage)
        s = (1 - w) * user_scores(emb, cat, h, cfg.retrieval_history, cfg.recency_decay) + w * cooc_scores(cooc, cat, h, cfg.retrieval_history, cfg.recency_decay)
        r[stage], _ = recall_at(s, cat, h, t, 20)
    rows.append(r); print(r, flush=True)
json.dump({"embedder": "all-MiniLM-L6-v2 (base)", "k": 20, "users": len(splits), "grid": rows,
           "command": "python /tmp/cooc_grid.py (ad-hoc extension of the fusion grid; functions from recgen.finetune.retriever)"},
          open("finetune/results/ml-100k-retriever/cooc_grid_extended.json", "w"), indent=2)
