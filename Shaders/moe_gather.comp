#version 450
// moe_gather: rows[r, :] = weights[s]·x[s / k, :] for s = sources[r] (weights[s] = 1 when
//   hasWeights = 0), and 0 where s < 0.                       CPU twin: CPUBackend.moeGather
//   A source ≥ pairs = n·k (the CPU backend throws) also gives a zero row.
// Shapes: x (n, cols) f32; sources (rows) i32; weights (n, k) f32; rows (rows, cols) f32.
// Bindings: 0 x, 1 sources, 2 weights (any f32 buffer when hasWeights = 0), all readonly;
//   3 rows.
// Push (after boff[8]): rows, cols, pairs, k, hasWeights → Swift `MoEGatherPush`.
// Dispatch: one invocation per output element (rows·cols), workgroups of spec constant 0
//   on a 2D grid (common/grid.glsl).
#include "common/push.glsl"
#include "common/grid.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufX { float x[]; };
layout(set = 0, binding = 1) readonly buffer BufSources { int sources[]; };
layout(set = 0, binding = 2) readonly buffer BufWeights { float weights[]; };
layout(set = 0, binding = 3) buffer BufRows { float o[]; };

PUSH_BEGIN
  uint rows;
  uint cols;
  uint pairs;
  uint k;
  uint hasWeights;
PUSH_END

void main() {
  uint i = global_linear_id();
  if (i >= pc.rows * pc.cols) return;
  uint r = i / pc.cols;
  uint c = i - r * pc.cols;
  int s = sources[pc.boff[1] + r];
  float v = 0.0;
  if (s >= 0 && uint(s) < pc.pairs) {
    v = x[pc.boff[0] + (uint(s) / pc.k) * pc.cols + c];
    if (pc.hasWeights != 0u) v = weights[pc.boff[2] + uint(s)] * v;
  }
  o[pc.boff[3] + i] = v;
}
