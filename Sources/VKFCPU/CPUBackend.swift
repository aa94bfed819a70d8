// Placeholder; replaced by the CPU backend.
