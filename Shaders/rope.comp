#version 450
// rope: rotary position embedding, Hugging Face rotate-half layout.
//                                    CPU twins: CPUBackend.rope / CPUBackend.ropeBackward
//   For token t, head h, i < half = headDim/2, angle a = float(pos[t]) · invFreq[i]:
//     out[t,h,i]      = x[t,h,i]·cos(s·a) − x[t,h,i+half]·sin(s·a)
//     out[t,h,i+half] = x[t,h,i+half]·cos(s·a) + x[t,h,i]·sin(s·a)
//   s = +1 forward (rope), s = −1 backward (ropeBackward: the rotation is orthogonal, so
//   its transpose is the rotation by −a).
// Shapes: x, out (tokens, heads, headDim) f32; positions (tokens) i32; invFreq (half) f32.
//   In place (out == x) is fine: each invocation reads and writes only its own pair.
// Bindings: 0 x, 1 positions, 2 invFreq (readonly), 3 out.
// Push (after boff[8]): pairs (= tokens·heads·half), heads, half, sign (±1.0)
//   → Swift `RoPEPush`.
// Dispatch: one invocation per (t, h, i) pair; workgroups of spec constant 0 (256)
//   invocations on a 2D grid (common/grid.glsl).
// The angle is the f32 product float(pos)·invFreq (as transformers computes it), then
// reduced to [−π, π] in two steps (Cody–Waite, 2π = 6.28125 + 0.0019353…) before sin/cos:
// GPU sin/cos are only accurate near zero and positions reach tens of thousands.
#include "common/push.glsl"
#include "common/grid.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufX { float x[]; };
layout(set = 0, binding = 1) readonly buffer BufPos { int pos[]; };
layout(set = 0, binding = 2) readonly buffer BufFreq { float inv_freq[]; };
layout(set = 0, binding = 3) buffer BufOut { float o[]; };

PUSH_BEGIN
  uint pairs;
  uint heads;
  uint half_dim;
  float sign;
PUSH_END

const float TWO_PI_HI = 6.28125;                 // 8 significant bits: k·HI is exact
const float TWO_PI_LO = 0.0019353071795864769;   // 2π − TWO_PI_HI
const float INV_TWO_PI = 0.15915494309189535;

void main() {
  uint p = global_linear_id();
  if (p >= pc.pairs) return;
  uint i = p % pc.half_dim;
  uint th = p / pc.half_dim;         // token·heads + head
  uint tok = th / pc.heads;
  precise float a = float(pos[pc.boff[1] + tok]) * inv_freq[pc.boff[2] + i];
  precise float k = round(a * INV_TWO_PI);
  precise float r = (a - k * TWO_PI_HI) - k * TWO_PI_LO;
  float c = cos(r);
  float s = sin(r) * pc.sign;
  uint base = th * 2u * pc.half_dim + i;
  float x1 = x[pc.boff[0] + base];
  float x2 = x[pc.boff[0] + base + pc.half_dim];
  o[pc.boff[3] + base] = x1 * c - x2 * s;
  o[pc.boff[3] + base + pc.half_dim] = x2 * c + x1 * s;
}
