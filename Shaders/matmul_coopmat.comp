#version 450
// matmul_coopmat: C = alpha·op(A)·op(B) + beta·C, batched, on cooperative matrices (tensor
// cores, WMMA, XMX): f16 × f16 products accumulated in f32.
//                        CPU twin: CPUBackend.matmul (f16 panels widened for cblas_sgemm)
//
// Same shapes, layouts, bindings and push constants as matmul.comp (Swift `MatmulPush`), so
// the backend swaps one for the other per product. The Swift side selects this kernel only
// when A and B are both stored f16: the tile is then staged as the operands' own bits and
// the result equals the f32 sum of the exact f16 products (up to summation order). The
// shader converts f32 / bf16 operands to f16 as well (A_TYPE / B_TYPE 0 | 2), for
// benchmarks; that rounds them, so the backend never picks it for those.
//
// Layout of one workgroup: 2 × 2 subgroups; each subgroup owns a (CM·lM) × (CN·lN) block
// of C made of CM × CN accumulator matrices of lM × lN (the device's cooperative-matrix
// shape, from vkGetPhysicalDeviceCooperativeMatrixProperties*). BM = 2·CM·lM rows and
// BN = 2·CN·lN columns per workgroup; BK k per shared-memory step (a multiple of lK).
// The K loop stages op(A)[BM × BK] (k fast) and op(B)[BK × BN] (n fast) into shared memory
// as packed f16 pairs, zero outside the matrix, and each subgroup multiplies its tiles.
// The epilogue stores each accumulator to a per-subgroup shared scratch and applies
// alpha / beta element by element with bounds checks (partial tiles, any ldc).
//
// Alignment (cooperative-matrix loads need 16 bytes for the start and the stride): shared
// rows are padded by 4 words, tile offsets are multiples of 8 f16 (lK, lN ≥ 8).
//
// Requirements: shaderFloat16, the cooperative-matrix feature of the flavour compiled, and
// a fixed subgroup size (the workgroup holds exactly 4 subgroups).
//
// Variant defines:
//   TRANS_A, TRANS_B 0|1, A_TYPE, B_TYPE 0|1|2   as in matmul.comp
//   COOPMAT_KHR 0|1   GL_NV_cooperative_matrix (0; Debian 12's glslang 12 compiles it) or
//                     GL_KHR_cooperative_matrix (1; needs a newer run-time glslang; the
//                     backend tries it and falls back to NV or to matmul.comp)
//   COOPMAT_EMULATE 0|1, EMU_SUBGROUP n   tests only: the intrinsics modelled in plain GLSL
//                     for a device with subgroups of n (lavapipe), see below
// Specialization constants: 0..2 workgroup size (x = 4 × subgroup size, y = z = 1), 3 lM,
//   4 lN, 5 lK, 6 CM, 7 CN, 8 BK.
// Dispatch: x = ceil(n / BN), y = ceil(m / BM), z = batch, clamped to the device limits;
//   workgroups grid-stride over the tiles that do not fit.
// variant: A_TYPE=1 B_TYPE=1 TRANS_A=0 TRANS_B=1
// variant: A_TYPE=1 B_TYPE=1 TRANS_A=1 TRANS_B=0
// variant: A_TYPE=1 B_TYPE=1 TRANS_A=1 TRANS_B=1
// variant: A_TYPE=0 B_TYPE=2
// variant: COOPMAT_EMULATE=1 EMU_SUBGROUP=8 TRANS_A=1
#ifndef TRANS_A
#define TRANS_A 0
#endif
#ifndef TRANS_B
#define TRANS_B 0
#endif
#ifndef A_TYPE
#define A_TYPE 1
#endif
#ifndef B_TYPE
#define B_TYPE 1
#endif
#ifndef COOPMAT_KHR
#define COOPMAT_KHR 0
#endif

#ifndef COOPMAT_EMULATE
#define COOPMAT_EMULATE 0
#endif

#extension GL_KHR_shader_subgroup_basic : enable
#if !COOPMAT_EMULATE
#extension GL_KHR_memory_scope_semantics : enable
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : enable
#if COOPMAT_KHR
#extension GL_KHR_cooperative_matrix : enable
#else
#extension GL_NV_cooperative_matrix : enable
#endif
#endif

#include "common/push.glsl"
#include "common/half.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint lM = 16;
layout(constant_id = 4) const uint lN = 16;
layout(constant_id = 5) const uint lK = 16;
layout(constant_id = 6) const uint CM = 2;
layout(constant_id = 7) const uint CN = 2;
layout(constant_id = 8) const uint BK = 32;

const uint BM = 2u * CM * lM;
const uint BN = 2u * CN * lN;
const uint WA = BK / 2u + 4u;   // words per staged A row (BK f16 + 8 f16 padding)
const uint WB = BN / 2u + 4u;   // words per staged B row (BN f16 + 8 f16 padding)

#if COOPMAT_EMULATE
// Test-only software model of the three intrinsics with the extensions' semantics (row-major,
// offsets and strides in units of the uint array, f16 elements packed low half first), so
// lavapipe runs everything else in this kernel: staging, tiling, grid strides, epilogue.
// A and B "matrices" are references into sa / sb (word offset, stride); an accumulator is an
// index into emu_acc, which holds this lane's share of each one's lM × lN elements (element
// e = lane + i·subgroup size, row-major).
const uint EMU_PER_LANE = (lM * lN + EMU_SUBGROUP - 1u) / EMU_SUBGROUP;
float emu_acc[CM * CN * EMU_PER_LANE];
#define MAT_A uvec2
#define MAT_B uvec2
#define MAT_C uint
#define MAT_LOAD(m, buf, at_, stride_) m = uvec2(at_, stride_)
#define MAT_STORE(m, buf, at_, stride_) emu_store(m, at_, stride_)
#define MAT_MULADD(a, b, c) emu_muladd(a, b, c)
#define MAT_ZERO(acc, t) acc[t] = emu_zero(t)
#elif COOPMAT_KHR
#define MAT_A coopmat<float16_t, gl_ScopeSubgroup, lM, lK, gl_MatrixUseA>
#define MAT_B coopmat<float16_t, gl_ScopeSubgroup, lK, lN, gl_MatrixUseB>
#define MAT_C coopmat<float, gl_ScopeSubgroup, lM, lN, gl_MatrixUseAccumulator>
#define MAT_LOAD(m, buf, at, stride) coopMatLoad(m, buf, at, stride, gl_CooperativeMatrixLayoutRowMajor)
#define MAT_STORE(m, buf, at, stride) coopMatStore(m, buf, at, stride, gl_CooperativeMatrixLayoutRowMajor)
#define MAT_MULADD(a, b, c) coopMatMulAdd(a, b, c)
#define MAT_ZERO(acc, t) acc[t] = MAT_C(0.0)
#else
#define MAT_A fcoopmatNV<16, gl_ScopeSubgroup, lM, lK>
#define MAT_B fcoopmatNV<16, gl_ScopeSubgroup, lK, lN>
#define MAT_C fcoopmatNV<32, gl_ScopeSubgroup, lM, lN>
#define MAT_LOAD(m, buf, at, stride) coopMatLoadNV(m, buf, at, stride, false)
#define MAT_STORE(m, buf, at, stride) coopMatStoreNV(m, buf, at, stride, false)
#define MAT_MULADD(a, b, c) coopMatMulAddNV(a, b, c)
#define MAT_ZERO(acc, t) acc[t] = MAT_C(0.0)
#endif

#if A_TYPE == 0
layout(set = 0, binding = 0) readonly buffer BufA { float a[]; };
#else
layout(set = 0, binding = 0) readonly buffer BufA { uint a[]; };
#endif
#if B_TYPE == 0
layout(set = 0, binding = 1) readonly buffer BufB { float b[]; };
#else
layout(set = 0, binding = 1) readonly buffer BufB { uint b[]; };
#endif
layout(set = 0, binding = 2) buffer BufC { float c[]; };

PUSH_BEGIN
  uint m;
  uint n;
  uint k;
  uint lda;
  uint ldb;
  uint ldc;
  uint strideA;
  uint strideB;
  uint strideC;
  uint batch;
  float alpha;
  float beta;
PUSH_END

shared uint sa[BM * WA];          // sa[r·WA + kk/2]: op(A)[row0 + r, k0 + kk], f16 pairs
shared uint sb[BK * WB];          // sb[kk·WB + c/2]: op(B)[k0 + kk, col0 + c], f16 pairs
shared float sc[4u * lM * lN];    // one lM × lN accumulator per subgroup, for the epilogue

uint baseA, baseB, baseC;  // this batch entry's first element in each buffer

#if COOPMAT_EMULATE
// f16 element (r, col) of a row-major matrix m = (word offset, row stride in words).
float emu_a(uvec2 m, uint r, uint col) { return f16_to_f32(half_bits(sa[m.x + r * m.y + (col >> 1)], col)); }
float emu_b(uvec2 m, uint r, uint col) { return f16_to_f32(half_bits(sb[m.x + r * m.y + (col >> 1)], col)); }
uint emu_zero(uint t) {
  for (uint i = 0u; i < EMU_PER_LANE; i++) emu_acc[t * EMU_PER_LANE + i] = 0.0;
  return t;
}
uint emu_muladd(uvec2 a, uvec2 b, uint t) {
  for (uint i = 0u; i < EMU_PER_LANE; i++) {
    uint e = gl_SubgroupInvocationID + i * gl_SubgroupSize;
    if (e >= lM * lN) break;
    float sum = emu_acc[t * EMU_PER_LANE + i];
    for (uint kk = 0u; kk < lK; kk++) sum += emu_a(a, e / lN, kk) * emu_b(b, kk, e % lN);
    emu_acc[t * EMU_PER_LANE + i] = sum;
  }
  return t;
}
void emu_store(uint t, uint at, uint stride) {
  for (uint i = 0u; i < EMU_PER_LANE; i++) {
    uint e = gl_SubgroupInvocationID + i * gl_SubgroupSize;
    if (e < lM * lN) sc[at + (e / lN) * stride + e % lN] = emu_acc[t * EMU_PER_LANE + i];
  }
}
#endif

// f16 bits of stored element e (f32 and bf16 are rounded to f16: benchmark variants only).
uint a_bits(uint e) {
#if A_TYPE == 0
  return f32_to_f16(a[e]);
#elif A_TYPE == 1
  return half_bits(a[e >> 1], e);
#else
  return f32_to_f16(bf16_to_f32(half_bits(a[e >> 1], e)));
#endif
}

uint b_bits(uint e) {
#if B_TYPE == 0
  return f32_to_f16(b[e]);
#elif B_TYPE == 1
  return half_bits(b[e >> 1], e);
#else
  return f32_to_f16(bf16_to_f32(half_bits(b[e >> 1], e)));
#endif
}

uint load_a(uint row, uint kk) {
#if TRANS_A
  return a_bits(baseA + kk * pc.lda + row);
#else
  return a_bits(baseA + row * pc.lda + kk);
#endif
}

uint load_b(uint kk, uint col) {
#if TRANS_B
  return b_bits(baseB + col * pc.ldb + kk);
#else
  return b_bits(baseB + kk * pc.ldb + col);
#endif
}

// Stages the BM × BK slice of op(A) and the BK × BN slice of op(B) at (row0, col0, k0) as f16
// pairs, zero outside [0, m) × [0, kEnd) and [0, kEnd) × [0, n). Workgroup-uniform.
void stage(uint row0, uint col0, uint k0, uint kEnd) {
  const uint threads = gl_WorkGroupSize.x;
  const uint tid = gl_LocalInvocationID.x;
  barrier();  // the previous step's loads from sa / sb are done
  for (uint idx = tid; idx < BM * (BK / 2u); idx += threads) {
#if TRANS_A
    uint r = idx % BM, p = idx / BM;             // neighbours read neighbouring rows (m fast)
#else
    uint p = idx % (BK / 2u), r = idx / (BK / 2u);  // neighbours read neighbouring k
#endif
    uint row = row0 + r, k = k0 + 2u * p;
    uint lo = (row < pc.m && k < kEnd) ? load_a(row, k) : 0u;
    uint hi = (row < pc.m && k + 1u < kEnd) ? load_a(row, k + 1u) : 0u;
    sa[r * WA + p] = lo | (hi << 16);
  }
  for (uint idx = tid; idx < BK * (BN / 2u); idx += threads) {
#if TRANS_B
    uint kk = idx % BK, p = idx / BK;              // neighbours read neighbouring k
#else
    uint p = idx % (BN / 2u), kk = idx / (BN / 2u);  // neighbours read neighbouring columns
#endif
    uint col = col0 + 2u * p, k = k0 + kk;
    uint lo = (col < pc.n && k < kEnd) ? load_b(k, col) : 0u;
    uint hi = (col + 1u < pc.n && k < kEnd) ? load_b(k, col + 1u) : 0u;
    sb[kk * WB + p] = lo | (hi << 16);
  }
  barrier();
}

void main() {
  const uint sg = gl_SubgroupID;
  const uint sgRow = (sg / 2u) * CM * lM, sgCol = (sg % 2u) * CN * lN;  // within the tile
  const uint tilesN = (pc.n + BN - 1u) / BN, tilesM = (pc.m + BM - 1u) / BM;
  for (uint z = gl_WorkGroupID.z; z < pc.batch; z += gl_NumWorkGroups.z) {
    baseA = (A_TYPE == 0 ? pc.boff[0] : 2u * pc.boff[0]) + z * pc.strideA;
    baseB = (B_TYPE == 0 ? pc.boff[1] : 2u * pc.boff[1]) + z * pc.strideB;
    baseC = pc.boff[2] + z * pc.strideC;
    for (uint ty = gl_WorkGroupID.y; ty < tilesM; ty += gl_NumWorkGroups.y) {
      for (uint tx = gl_WorkGroupID.x; tx < tilesN; tx += gl_NumWorkGroups.x) {
        const uint row0 = ty * BM, col0 = tx * BN;
        MAT_C acc[CM * CN];
        for (uint t = 0u; t < CM * CN; t++) MAT_ZERO(acc, t);
        for (uint k0 = 0u; k0 < pc.k; k0 += BK) {
          stage(row0, col0, k0, pc.k);
          for (uint kk = 0u; kk < BK; kk += lK) {
            MAT_A ma[CM];
            for (uint i = 0u; i < CM; i++) {
              MAT_LOAD(ma[i], sa, (sgRow + i * lM) * WA + kk / 2u, WA);
            }
            for (uint j = 0u; j < CN; j++) {
              MAT_B mb;
              MAT_LOAD(mb, sb, kk * WB + (sgCol + j * lN) / 2u, WB);
              for (uint i = 0u; i < CM; i++) acc[i * CN + j] = MAT_MULADD(ma[i], mb, acc[i * CN + j]);
            }
          }
        }
        // Epilogue through this subgroup's scratch: alpha, beta and bounds per element.
        const uint scratch = sg * lM * lN;
        for (uint i = 0u; i < CM; i++) {
          for (uint j = 0u; j < CN; j++) {
            MAT_STORE(acc[i * CN + j], sc, scratch, lN);
            subgroupMemoryBarrierShared();
            subgroupBarrier();
            for (uint e = gl_SubgroupInvocationID; e < lM * lN; e += gl_SubgroupSize) {
              uint row = row0 + sgRow + i * lM + e / lN, col = col0 + sgCol + j * lN + e % lN;
              if (row < pc.m && col < pc.n) {
                uint at = baseC + row * pc.ldc + col;
                float v = sc[scratch + e];
                c[at] = pc.beta == 0.0 ? pc.alpha * v : pc.alpha * v + pc.beta * c[at];
              }
            }
            subgroupBarrier();  // every lane has read the scratch before the next store
          }
        }
      }
    }
  }
}
