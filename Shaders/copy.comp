#version 450
// copy: dst[i] = src[i] over 32-bit words (any dtype whose views start and end on a
// 4-byte boundary). The backend normally uses vkCmdCopyBuffer; this shader is the
// compute-only path (VulkanBackend.copyWithShader) and a template for strided copies.
// Mirrors CPUBackend.copy (non-overlapping views).
// Bindings: 0 src (uint words, readonly), 1 dst (uint words, written).
// Push: words.
// Dispatch: one invocation per word; groups (x, y) with x·y·256 ≥ words.
#include "common/push.glsl"
#include "common/grid.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(set = 0, binding = 0) readonly buffer Src { uint s[]; };
layout(set = 0, binding = 1) buffer Dst { uint d[]; };

PUSH_BEGIN
  uint words;
PUSH_END

void main() {
  uint i = global_linear_id();
  if (i >= pc.words) return;
  d[pc.boff[1] + i] = s[pc.boff[0] + i];
}
