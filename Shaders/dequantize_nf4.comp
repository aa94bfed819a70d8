#version 450
// dequantize_nf4: out[e] = NF4_CODE[q(e)] · absmax[e / blockSize].
//                      CPU twin: CPUBackend.dequantizeNF4 (NF4.dequantize, NF4DoubleQuant.decode)
//
// Shapes: W (rows, cols) row-major, count = rows·cols (even) elements. packed: count/2 bytes,
//   two 4-bit indices per byte, first element in the high nibble (bitsandbytes layout), read
//   as uint words: element e is in word e/8 (common/nf4.glsl nf4_index). absmax: one per
//   block of blockSize consecutive elements, f32 (NF4_DQ = 0) or double-quantised (NF4_DQ = 1:
//   u8 codes read as uint words, one f32 nested scale per nestedBlock codes, and the offset;
//   common/nf4.glsl nf4_dq_absmax). out: count f32.
// Bindings: 0 packed (readonly, u8 data as uint words; 4-byte aligned offset), 1 absmax f32 or
//   codes (readonly), 2 out, 3 nested scales (NF4_DQ = 1 only, readonly).
// Push (after boff[8]): count, blockSize, nestedBlock, absmaxOffset → Swift `DequantizeNF4Push`.
// Dispatch: one invocation per packed word (8 elements); x = ceil(ceil(count/8) / WG) clamped
//   to maxComputeWorkGroupCount.x, grid-striding over the rest. Workgroup WG × 1 × 1
//   (specialization constant 0).
// Variant defines: NF4_DQ 0|1 (f32 or double-quantised absmax).
// variant: NF4_DQ=1
#ifndef NF4_DQ
#define NF4_DQ 0
#endif

#include "common/push.glsl"
#include "common/nf4.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(set = 0, binding = 0) readonly buffer Packed { uint packed[]; };
layout(set = 0, binding = 2) writeonly buffer Out { float outv[]; };

PUSH_BEGIN
  uint count;
  uint blockSize;
  uint nestedBlock;
  float absmaxOffset;
PUSH_END

NF4_ABSMAX(1, 3)

void main() {
  const uint words = (pc.count + 7u) / 8u;
  const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint w = gl_GlobalInvocationID.x; w < words; w += stride) {
    uint word = packed[pc.boff[0] + w];
    uint e0 = w * 8u;
    uint n = min(8u, pc.count - e0);
    for (uint j = 0u; j < n; j++) {
      uint e = e0 + j;
      outv[pc.boff[2] + e] = NF4_CODE[nf4_index(word, j)] * block_absmax(e / pc.blockSize);
    }
  }
}
