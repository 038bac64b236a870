"""Pre-training, in one place: the domain corpus (`corpus`), the domain byte-level BPE tokenizer (`tokenizer`) and a
small GPT-2 pre-trained from scratch on them with the fine-tuning's training loop (`model`)."""
