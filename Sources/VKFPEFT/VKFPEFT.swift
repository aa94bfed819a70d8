// VKFPEFT: parameter-efficient fine-tuning (LoRA, DoRA, QLoRA), PEFT adapter files, merging.
