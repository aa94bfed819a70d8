#version 450
// dequantize_int8: out[e] = (q[e] − zp[b]) · scale[b], b = e / blockSize.
//                      CPU twin: CPUBackend.dequantizeInt8 (Int8Weight.dequantize)
//
// Shapes: W (rows, cols) row-major, count = rows·cols elements. q: count int8 bit patterns read
//   as uint words (element e is byte e & 3 of word e/4, little-endian). scale: one f32 per
//   block of blockSize consecutive elements; zp (ZP = 1 only): one f32 integer per block.
//   out: count f32. The subtraction and the product round separately in f32, as the CPU's.
// Bindings: 0 q (readonly, u8 data as uint words; 4-byte aligned offset), 1 scales (readonly),
//   2 out, 3 zero points (ZP = 1 only, readonly).
// Push (after boff[8]): count, blockSize → Swift `DequantizeInt8Push`.
// Dispatch: one invocation per word (4 elements); x = ceil(ceil(count/4) / WG) clamped to
//   maxComputeWorkGroupCount.x, grid-striding over the rest. Workgroup WG × 1 × 1
//   (specialization constant 0).
// Variant defines: ZP 0|1 (symmetric, or asymmetric with zero points).
// variant: ZP=1
#ifndef ZP
#define ZP 0
#endif

#include "common/push.glsl"
#include "common/int8.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(set = 0, binding = 0) readonly buffer Values { uint qv[]; };
layout(set = 0, binding = 2) writeonly buffer Out { float outv[]; };

PUSH_BEGIN
  uint count;
  uint blockSize;
PUSH_END

INT8_SCALES(1, 3)

void main() {
  const uint words = (pc.count + 3u) / 4u;
  const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint w = gl_GlobalInvocationID.x; w < words; w += stride) {
    uint word = qv[pc.boff[0] + w];
    uint e0 = w * 4u;
    uint n = min(4u, pc.count - e0);
    for (uint j = 0u; j < n; j++) {
      uint e = e0 + j;
      outv[pc.boff[2] + e] = int8_dequant(int8_at(word, j), e / pc.blockSize);
    }
  }
}
