#version 450
// variant: USE_SUBGROUP=1
// moe_combine_back: dWeights[t, s] = dOut[t, :] · rows[slots[t, s], :], the combine's weight
//   gradient.                                         CPU twin: CPUBackend.moeCombineBackward
//   Each invocation sums its strided columns, then a workgroup tree (common/reduce.glsl):
//   deterministic, in another order than the CPU's sequential dot.
//   A slot outside [0, rows) (the CPU backend throws) gives dWeights[t, s] = 0.
// Shapes: dOut (n, cols) f32; rows (rows, cols) f32; slots (n, k) i32; dWeights (n, k) f32.
// Bindings: 0 dOut, 1 rows, 2 slots (readonly), 3 dWeights.
// Push (after boff[8]): pairs (n·k), cols, k, rows → Swift `MoECombineBackPush`.
// Dispatch: one workgroup per pair (2D grid), RED_WG invocations striding over the columns.
#include "common/push.glsl"
#include "common/grid.glsl"
#include "common/reduce.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufDOut { float dout[]; };
layout(set = 0, binding = 1) readonly buffer BufRows { float rows[]; };
layout(set = 0, binding = 2) readonly buffer BufSlots { int slots[]; };
layout(set = 0, binding = 3) buffer BufDWeights { float dweights[]; };

PUSH_BEGIN
  uint pairs;
  uint cols;
  uint k;
  uint rows;
PUSH_END

void main() {
  uint p = wg_linear_id();
  if (p >= pc.pairs) return;  // uniform over the workgroup
  uint t = gl_LocalInvocationID.x;
  int slot = slots[pc.boff[2] + p];
  if (slot < 0 || uint(slot) >= pc.rows) {  // uniform: everyone read the same slot
    if (t == 0u) dweights[pc.boff[3] + p] = 0.0;
    return;
  }
  uint a = pc.boff[0] + (p / pc.k) * pc.cols, b = pc.boff[1] + uint(slot) * pc.cols;
  float s = 0.0;
  for (uint c = t; c < pc.cols; c += RED_WG) s += dout[a + c] * rows[b + c];
  s = wg_reduce_sum(s);
  if (t == 0u) dweights[pc.boff[3] + p] = s;
}
