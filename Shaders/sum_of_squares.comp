#version 450
// variant: USE_SUBGROUP=1
// sum_of_squares: out[0] += Σ x[i]².                       CPU twin: CPUBackend.sumOfSquares
// Deterministic two-pass tree reduction (no float atomics):
//   pass 1 (SQUARE = 1, ACCUMULATE = 0): workgroup g sums x² over its block of
//     perGroup = RED_WG·itemsPerThread elements (strided per invocation, then a shared tree)
//     and writes partial[g];
//   pass 2 (SQUARE = 0, ACCUMULATE = 1): one workgroup sums the partials and adds the
//     total into out[0].
//   A single block uses one pass (SQUARE = 1, ACCUMULATE = 1).
// Shapes: in (n) f32; out: partials (groups) f32 (scratch) or the one-f32 accumulator.
// Bindings: 0 in (readonly), 1 out.
// Push (after boff[8]): n, perGroup → Swift `SumOfSquaresPush`.
// Dispatch: ceil(n / perGroup) workgroups on a 2D grid (common/grid.glsl), RED_WG wide.
// variant: SQUARE=0 ACCUMULATE=1
// variant: SQUARE=1 ACCUMULATE=1
#ifndef SQUARE
#define SQUARE 1
#endif
#ifndef ACCUMULATE
#define ACCUMULATE 0
#endif
#include "common/push.glsl"
#include "common/grid.glsl"
#include "common/reduce.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufIn { float x[]; };
layout(set = 0, binding = 1) buffer BufOut { float o[]; };

PUSH_BEGIN
  uint n;
  uint perGroup;
PUSH_END

void main() {
  uint g = wg_linear_id();
  uint start = g * pc.perGroup;
  if (start >= pc.n) return;  // uniform over the workgroup
  uint end = min(start + pc.perGroup, pc.n);
  float s = 0.0;
  for (uint i = start + gl_LocalInvocationID.x; i < end; i += RED_WG) {
    float v = x[pc.boff[0] + i];
#if SQUARE
    s += v * v;
#else
    s += v;
#endif
  }
  s = wg_reduce_sum(s);
  if (gl_LocalInvocationID.x == 0u) {
#if ACCUMULATE
    o[pc.boff[1]] += s;
#else
    o[pc.boff[1] + g] = s;
#endif
  }
}
