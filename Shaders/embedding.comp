#version 450
// embedding: out[i, c] = table[ids[i], c].                   CPU twin: CPUBackend.embedding
// Shapes: ids (n) i32; table (vocab, cols) f32, or f16 / bf16 with TABLE_TYPE 1 / 2 (a
//   frozen table, packed as in common/half.glsl); out (n, cols) f32.
// An id outside [0, vocab) (the CPU backend throws; checking here would need a download)
//   fills its output row with NaN, so the error surfaces in the loss instead of reading
//   another buffer's memory.
// Bindings: 0 ids, 1 table (readonly), 2 out.
// Push (after boff[8]): n, cols, vocab → Swift `EmbeddingPush`.
// Dispatch: one invocation per output element (n·cols); workgroups of spec
//   constant 0 (256) invocations on a 2D grid (common/grid.glsl).
// variant: TABLE_TYPE=1
// variant: TABLE_TYPE=2
#ifndef TABLE_TYPE
#define TABLE_TYPE 0
#endif
#include "common/push.glsl"
#include "common/grid.glsl"
#include "common/half.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufIds { int ids[]; };
#if TABLE_TYPE == 0
layout(set = 0, binding = 1) readonly buffer BufTable { float table[]; };
#else
layout(set = 0, binding = 1) readonly buffer BufTable { uint table[]; };
#endif
layout(set = 0, binding = 2) buffer BufOut { float o[]; };

PUSH_BEGIN
  uint n;
  uint cols;
  uint vocab;
PUSH_END

void main() {
  uint e = global_linear_id();
  if (e >= pc.n * pc.cols) return;
  uint i = e / pc.cols;
  uint c = e - i * pc.cols;
  int id = ids[pc.boff[0] + i];
  float v = uintBitsToFloat(0x7FC00000u);  // NaN
  if (id >= 0 && uint(id) < pc.vocab) {
#if TABLE_TYPE == 0
    v = table[pc.boff[1] + uint(id) * pc.cols + c];
#else
    uint t = 2u * pc.boff[1] + uint(id) * pc.cols + c;
    v = HALF_TO_F32(TABLE_TYPE, half_bits(table[t >> 1], t));
#endif
  }
  o[pc.boff[2] + e] = v;
}
