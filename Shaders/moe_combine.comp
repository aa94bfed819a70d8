#version 450
// moe_combine: out[t, :] = Σ_s weights[t, s]·rows[slots[t, s], :] (+ out[t, :] when
//   accumulate = 1), summed over s = 0 ..< k in order from 0 or the previous value, as on
//   the CPU; weights[t, s] = 1 when hasWeights = 0.            CPU twin: CPUBackend.moeCombine
//   A slot outside [0, rows) (the CPU backend throws) adds nothing.
// Shapes: rows (rows, cols) f32; slots (n, k) i32; weights (n, k) f32; out (n, cols) f32.
// Bindings: 0 rows, 1 slots, 2 weights (any f32 buffer when hasWeights = 0), all readonly;
//   3 out (read when accumulate = 1).
// Push (after boff[8]): n, cols, k, rows, hasWeights, accumulate → Swift `MoECombinePush`.
// Dispatch: one invocation per output element (n·cols), workgroups of spec constant 0 on a
//   2D grid (common/grid.glsl); k iterations each.
#include "common/push.glsl"
#include "common/grid.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufRows { float rows[]; };
layout(set = 0, binding = 1) readonly buffer BufSlots { int slots[]; };
layout(set = 0, binding = 2) readonly buffer BufWeights { float weights[]; };
layout(set = 0, binding = 3) buffer BufOut { float o[]; };

PUSH_BEGIN
  uint n;
  uint cols;
  uint k;
  uint rows;
  uint hasWeights;
  uint accumulate;
PUSH_END

void main() {
  uint i = global_linear_id();
  if (i >= pc.n * pc.cols) return;
  uint t = i / pc.cols;
  uint c = i - t * pc.cols;
  float acc = pc.accumulate != 0u ? o[pc.boff[3] + i] : 0.0;
  for (uint s = 0u; s < pc.k; ++s) {
    int slot = slots[pc.boff[1] + t * pc.k + s];
    if (slot < 0 || uint(slot) >= pc.rows) continue;
    float w = pc.hasWeights != 0u ? weights[pc.boff[2] + t * pc.k + s] : 1.0;
    acc += w * rows[pc.boff[0] + uint(slot) * pc.cols + c];
  }
  o[pc.boff[3] + i] = acc;
}
