// tanh without the inf/inf of the textbook form, and soft-capping built on it; include
// where a kernel needs either (GELU tanh, Gemma 2's capped scores and logits).

// tanh(z) = 1 − 2/(exp(2z) + 1): exact limits ±1 when exp over- or underflows.
float tanh_safe(float z) { return 1.0 - 2.0 / (exp(2.0 * z) + 1.0); }

// cap·tanh(s / cap) (cap > 0).
float softcapped(float s, float cap) { return cap * (1.0 - 2.0 / (exp(2.0 * s / cap) + 1.0)); }
