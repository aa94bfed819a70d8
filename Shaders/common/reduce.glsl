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
//
// USE_SUBGROUP 1 (the host sets it when the device has subgroup arithmetic): each subgroup
// reduces in registers, then one shared slot per subgroup is summed in order — two
// barriers instead of log2(RED_WG) + 2, which matters most where barriers are expensive
// (CPU drivers such as lavapipe). Both paths are deterministic on a given device.
#include "common/grid.glsl"
#define RED_WG WG_SIZE
#ifndef USE_SUBGROUP
#define USE_SUBGROUP 0
#endif

shared float red_buf[RED_WG];

#if USE_SUBGROUP
#extension GL_KHR_shader_subgroup_arithmetic : require

float wg_reduce_sum(float v) {
  float s = subgroupAdd(v);
  if (subgroupElect()) red_buf[gl_SubgroupID] = s;
  memoryBarrierShared();
  barrier();
  float r = 0.0;
  for (uint i = 0u; i < gl_NumSubgroups; i++) r += red_buf[i];
  // A second reduction may start right away: nobody may overwrite the partials first.
  barrier();
  return r;
}

float wg_reduce_max(float v) {
  float s = subgroupMax(v);
  if (subgroupElect()) red_buf[gl_SubgroupID] = s;
  memoryBarrierShared();
  barrier();
  float r = red_buf[0];
  for (uint i = 1u; i < gl_NumSubgroups; i++) r = max(r, red_buf[i]);
  barrier();
  return r;
}

#else

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
#endif  // USE_SUBGROUP
