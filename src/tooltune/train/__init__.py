"""Training: the fine-tuning recipe (`recipe`: config -> tokenizer, model, data -> loop -> run directory), one
accelerate loop for every PEFT method (`loop`) with its distributed strategies (`strategy`) and trackers
(`tracking`), the method table (`methods`), frozen dataclass configs (`config`), examples and batching (`data`), the
token loss (`loss`), frozen bottom layers (`frozen`), resumable checkpoints (`checkpoint`), merged and checkpoint
export (`export`), GGUF files for llama.cpp and Ollama (`gguf_export`, `gguf_vocab`) and tiny in-process models
for tests (`tiny`). Pre-training is `tooltune.pretrain`."""
