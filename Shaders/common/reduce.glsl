// Workgroup-wide reductions over a shared-memory tree (used by the row-wise kernels:
// rms_norm, causal_softmax, cross_entropy, sum_of_squares, …).
//
// The including shader declares its workgroup as
//   layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
// so specialization constant 0 (common/grid.glsl's WG_SIZE) is both the x size and RED_WG
// here. RED_WG must be a power of two (the host picks 256, or less on small devices). Every
// invocation of the workgroup must call these functions in uniform control flow (they
// contain barriers).
//
// The sum is tree-shaped: each invocation first sums its own strided elements, then the
// workgroup halves log2(RED_WG) times, so the rounding error grows with
// (elements per invocation + log2 RED_WG), not with the row length.
#include "common/grid.glsl"
#define RED_WG WG_SIZE

shared float red_buf[RED_WG];

float wg_reduce_sum(float v) {
  uint t = gl_LocalInvocationID.x;
  red_buf[t] = v;
  memoryBarrierShared();
  barrier();
  for (uint s = RED_WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) red_buf[t] += red_buf[t + s];
    memoryBarrierShared();
    barrier();
  }
  float r = red_buf[0];
  // A second reduction may start right away; nobody may overwrite red_buf[0] before all
  // invocations have read it.
  barrier();
  return r;
}

float wg_reduce_max(float v) {
  uint t = gl_LocalInvocationID.x;
  red_buf[t] = v;
  memoryBarrierShared();
  barrier();
  for (uint s = RED_WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) red_buf[t] = max(red_buf[t], red_buf[t + s]);
    memoryBarrierShared();
    barrier();
  }
  float r = red_buf[0];
  barrier();
  return r;
}
