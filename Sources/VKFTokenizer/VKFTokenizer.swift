// VKFTokenizer: Hugging Face tokenizer.json tokenizers and chat templates.
