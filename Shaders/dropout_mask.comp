#version 450
// dropout_mask: mask[i] = unit(key, first + i) < threshold ? 0 : keep.
//                                                        CPU twin: CPUBackend.dropoutMask
//   key = hash(seedLo ^ hash(seedHi ^ hash(stream))),  unit(key, i) = hash(hash(i ^ key) + key),
//   hash = lowbias32 — exactly VKFCore's `DropoutMask` (32-bit integer arithmetic only, so
//   every backend draws the same mask). threshold = p·2³², keep = 1/(1 − p), both from the host.
//   The seed lives in a buffer, not push constants, so a recorded step draws new masks
//   each replay.
// Shapes: seed (2) i32 (low word, high word); mask (n) f32, a chunk starting at element
//   `first` of the whole mask.
// Bindings: 0 seed (readonly), 1 mask.
// Push (after boff[8]): n, first, stream, threshold, keep → Swift `DropoutMaskPush`.
// Dispatch: one invocation per element; workgroups of spec constant 0 invocations on a 2D
//   grid (common/grid.glsl).
#include "common/push.glsl"
#include "common/grid.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufSeed { uint seed[]; };
layout(set = 0, binding = 1) buffer BufMask { float mask[]; };

PUSH_BEGIN
  uint n;
  uint first;
  uint stream;
  uint threshold;
  float keep;
PUSH_END

uint lowbias32(uint x) {
  x ^= x >> 16; x *= 0x7feb352du;
  x ^= x >> 15; x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

void main() {
  uint i = global_linear_id();
  if (i >= pc.n) return;
  uint lo = seed[pc.boff[0]], hi = seed[pc.boff[0] + 1u];
  uint key = lowbias32(lo ^ lowbias32(hi ^ lowbias32(pc.stream)));
  uint u = lowbias32(lowbias32((pc.first + i) ^ key) + key);
  mask[pc.boff[1] + i] = u < pc.threshold ? 0.0 : pc.keep;
}
