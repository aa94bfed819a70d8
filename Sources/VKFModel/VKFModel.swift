// VKFModel: Llama-family configs, weights (safetensors, GGUF) and the model.
