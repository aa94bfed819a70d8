#version 450
// variant: USE_SUBGROUP=1
// causal_softmax: out = softmax(scale·x) over the last dim with a causal mask.
//                                                        CPU twin: CPUBackend.causalSoftmax
//   x, out (…, tq, tk) f32, tk ≥ tq, viewed as rows = count / tk rows of tk. Row r is query
//   i = r mod tq, at position p = i + (tk − tq) (a KV cache of tk − tq earlier tokens), and
//   sees keys j ≤ p, and only j > p − window when window > 0 (a sliding window).
//   out[r, j] = exp(scale·x[r,j] − m) / Σ_visible exp(scale·x − m), m = max_visible scale·x;
//   masked entries are 0 (and never read, so they may hold −inf or garbage).
//   Key starts (rowsPerGroup > 0): whole row g = (firstRow + row) / rowsPerGroup of a
//   left-padded batch also hides keys j < starts[g]; a row with no visible key is all 0.
// Bindings: 0 x (readonly), 1 out, 2 starts i32 (readonly; x when unused). In place
//   (out == x) is fine: each invocation reads its own elements only before the last
//   reduction and writes them after.
// Push (after boff[8]): rows, tq, tk, scale, window, rowsPerGroup, firstRow →
//   Swift `CausalSoftmaxPush`.
// Dispatch: one workgroup per row (2D grid), RED_WG invocations stride over the row.
#include "common/push.glsl"
#include "common/grid.glsl"
#include "common/reduce.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufX { float x[]; };
layout(set = 0, binding = 1) buffer BufOut { float o[]; };
layout(set = 0, binding = 2) readonly buffer BufStarts { int starts[]; };

PUSH_BEGIN
  uint rows;
  uint tq;
  uint tk;
  float scale;
  uint window;  // sliding window: keys p − window < j ≤ p for query position p; 0 = none
  uint rowsPerGroup;  // rows per sequence with key starts; 0 = none
  uint firstRow;      // this chunk's first row in the whole x
PUSH_END

void main() {
  uint row = wg_linear_id();
  if (row >= pc.rows) return;  // uniform over the workgroup
  uint t = gl_LocalInvocationID.x;
  uint xb = pc.boff[0] + row * pc.tk;
  uint ob = pc.boff[1] + row * pc.tk;
  uint visible = row % pc.tq + (pc.tk - pc.tq) + 1u;  // keys first ..< visible
  uint first = (pc.window == 0u || visible <= pc.window) ? 0u : visible - pc.window;
  if (pc.rowsPerGroup > 0u) first = max(first, uint(max(starts[pc.boff[2] + (pc.firstRow + row) / pc.rowsPerGroup], 0)));
  if (first >= visible) {  // a padding query: nothing to attend to
    for (uint j = t; j < pc.tk; j += RED_WG) o[pc.boff[1] + row * pc.tk + j] = 0.0;
    return;  // uniform over the workgroup
  }

  float m = -3.402823466e38;
  for (uint j = first + t; j < visible; j += RED_WG) m = max(m, pc.scale * x[xb + j]);
  m = wg_reduce_max(m);

  float s = 0.0;
  for (uint j = first + t; j < visible; j += RED_WG) s += exp(pc.scale * x[xb + j] - m);
  s = wg_reduce_sum(s);
  float inv = 1.0 / s;

  for (uint j = t; j < pc.tk; j += RED_WG) {
    o[ob + j] = j >= first && j < visible ? exp(pc.scale * x[xb + j] - m) * inv : 0.0;
  }
}
