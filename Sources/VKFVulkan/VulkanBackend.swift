// Placeholder; replaced by the Vulkan backend.
