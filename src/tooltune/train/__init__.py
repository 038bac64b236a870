"""Training: one accelerate loop for every PEFT method (`loop`), a method table (`methods`), frozen dataclass configs
(`config`), batching (`data`), merged export (`export`) and GPT-2 pre-training from scratch (`pretrain`)."""
