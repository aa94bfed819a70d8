#version 450
// fill: t[i] = value for every element of one tensor of any dtype.
// The host converts the value to the tensor's dtype and replicates it into a 32-bit
// pattern word (f16/bf16: bits | bits << 16; u8: byte × 4). The tensor's bytes may start
// and end inside a word (16/8-bit dtypes): the binding starts at the word holding the
// first byte, and firstMask / lastMask select the bytes of the first / last word that
// belong to the tensor; those words are read-modify-written, the rest simply stored.
// Mirrors CPUBackend.fill.
// Bindings: 0 d (uint words, written).
// Push: words (words covered), pattern, firstMask, lastMask.
// Dispatch: one invocation per word; groups (x, y) with x·y·256 ≥ words (y splits
//           counts above maxComputeWorkGroupCount[0]).
#include "common/push.glsl"
#include "common/grid.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(set = 0, binding = 0) buffer Dst { uint d[]; };

PUSH_BEGIN
  uint words;
  uint pattern;
  uint firstMask;
  uint lastMask;
PUSH_END

void main() {
  uint i = global_linear_id();
  if (i >= pc.words) return;
  uint mask = 0xFFFFFFFFu;
  if (i == 0u) mask &= pc.firstMask;
  if (i == pc.words - 1u) mask &= pc.lastMask;
  uint j = pc.boff[0] + i;
  if (mask == 0xFFFFFFFFu) {
    d[j] = pc.pattern;
  } else {
    d[j] = (d[j] & ~mask) | (pc.pattern & mask);
  }
}
