print("vkfinetune")
