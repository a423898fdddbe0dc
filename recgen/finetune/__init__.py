"""Fine-tuning: LoRA SFT of the LM ranker (verbalizer labels) and contrastive tuning of the retriever."""
