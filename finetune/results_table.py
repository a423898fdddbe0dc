"""Markdown rows of finetune/results/RESULTS.md: every system on the users of one LM run (paired, same users).

Usage: python finetune/results_table.py ml-100k amazon-beauty [--users-of lm-lora-test-u500-s0]
Reads eval/results/<dataset>/<run>.users.jsonl(.gz); full-catalog ranks, so a missed target counts as 0.
"""
import json,gzip,statistics as st,sys
def load(ds,run):
    p=f'eval/results/{ds}/{run}.users.jsonl'
    try: f=open(p); f.readline()
    except FileNotFoundError: f=gzip.open(p+'.gz','rt'); f.readline()
    return {r['user']:r for r in map(json.loads,f)}
runs=[('retrieval only (hybrid, base MiniLM)','retrieval-hybrid-test'),
      ('retrieval only (hybrid, fine-tuned MiniLM)','retrieval-hybrid-ftret-test'),
      ('zero-shot LM ranker','lm-zeroshot-test-u500-s0'),
      ('zero-shot LM ranker','lm-zeroshot-test-u2000-s0'),
      ('fine-tuned LM ranker (LoRA)','lm-lora-test-u500-s0'),
      ('fine-tuned LM ranker (LoRA)','lm-lora-test-u2000-s0'),
      ('fine-tuned LM + validation-set retrieval prior','lm-lora-prior-test-u500-s0'),
      ('fine-tuned LM + validation-set retrieval prior','lm-lora-prior-test-u2000-s0'),
      ('fine-tuned retriever + fine-tuned LM ranker','lm-lora-ftret-test-u500-s0'),
      ('SASRec','sasrec-test')]
args=sys.argv[1:]
anchor='lm-lora-test-u500-s0'
if '--users-of' in args:
    i=args.index('--users-of'); anchor=args[i+1]; del args[i:i+2]
for ds in args:
    users=list(load(ds,anchor))
    print('##',ds,len(users))
    for label,run in runs:
        try:
            r=load(ds,run)
        except FileNotFoundError:
            continue
        if any(u not in r for u in users):
            continue  # that run did not score these users: no paired row
        v=[r[u] for u in users]
        m=lambda key: st.mean(x[key] for x in v)
        r20=st.mean((x['rank'] or 10**9)<=20 for x in v)
        print(f"| {label} | `{run}` | {m('ndcg@10'):.4f} | {m('recall@10'):.4f} | {m('mrr@10'):.4f} | {r20:.4f} |")
