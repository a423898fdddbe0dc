"""Training-epoch time on Beauty for output-layer variants, interleaved in ONE process (threads=1), on the same
seeded batches: fp32 (float32 output layer), bf16 (bfloat16 matmul, loss on float32 copies of the logits, the
old Beauty setting), bf16loss (loss on the bfloat16 logits, ``bf16_loss=True``). Output: profile_epoch.txt.

RECGEN_DATA_DIR=/work/shared/data PYTHONPATH=$PWD python eval/results/sasrec/profile_epoch.py 50 \
    fp32 bf16 bf16loss fp32 bf16 bf16loss
(first argument: steps per variant; the epoch estimate scales it to the epoch's 176 steps)
"""

import sys
import time

import numpy as np
import torch

from recgen.data import load_dataset
from recgen.evaluation.protocol import EvalData
from recgen.fit.sasrec_train import _output_loss, length_batches, training_windows
from recgen.models.sasrec import SASRec, SASRecConfig

torch.set_num_threads(1)
data = EvalData.from_dataset(load_dataset("amazon-beauty"))
inputs, targets = training_windows(data.train_sequences(), 50, True)
lengths = (inputs > 0).sum(axis=1)
limit = int(sys.argv[1])
for mode in sys.argv[2:]:
    name, _, batch = mode.partition(":")
    batch = int(batch or 128)
    cfg = SASRecConfig(max_len=50, dropout=0.5, lr=2e-3, batch_size=batch, threads=1,
                       bf16_logits=name != "fp32", bf16_loss=name == "bf16loss")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = SASRec(data.n_items, cfg)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
    batches = length_batches(lengths, batch, rng)
    n = min(len(batches), limit)
    start, losses = time.perf_counter(), []
    for idx in batches[:n]:
        width = max(1, int(lengths[idx].max()))
        x, y = torch.from_numpy(inputs[idx, -width:]), torch.from_numpy(targets[idx, -width:])
        hidden = model.encode(x)
        where = y > 0
        loss = _output_loss(model, hidden[where], y[where] - 1, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    took = time.perf_counter() - start
    print(f"{mode}: {n}/{len(batches)} steps {took:.1f}s, epoch est {took * len(batches) / n:.1f}s, "
          f"mean loss {np.mean(losses):.4f}", flush=True)
