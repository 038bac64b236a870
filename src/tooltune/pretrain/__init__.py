"""Pre-training inputs: the domain corpus (`corpus`) and the domain byte-level BPE tokenizer (`tokenizer`)."""
