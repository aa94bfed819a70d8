// Shared-memory tiled GEMM core used by matmul.comp, matmul_nf4.comp and lora_forward.comp.
//
// One workgroup computes a BM×BN tile of the output; each of its (BM/TM)·(BN/TN) invocations
// keeps a TM×TN block of accumulators in registers (register blocking). The K loop stages a
// BM×BK slice of op(A) and a BK×BN slice of op(B) in shared memory, both k-major so the inner
// product reads TM + TN shared values per k for TM·TN multiply-adds.
// Measured on lavapipe (2 cores): BM = BN = 64, TM = TN = 8 (64 invocations), BK = 8 or 16.
//
// The including shader provides, before `#include`:
//   #define MM_A_K_FAST 0|1  1: consecutive k of op(A) are adjacent in memory (A row-major, k last)
//   #define MM_B_K_FAST 0|1  1: consecutive k of op(B) are adjacent in memory (B stored (n, k))
// (they only pick the load order, so neighbouring invocations read neighbouring words), and
// after it defines the element accessors declared below:
//   float mm_load_a(uint row, uint kk)   op(A)[row, kk], both in range
//   float mm_load_b(uint kk, uint col)   op(B)[kk, col], both in range
//   void  mm_write(uint row, uint col, float acc)   epilogue for one in-range output
//
// Specialization constants: 0..2 workgroup size (x = (BM/TM)·(BN/TN), y = z = 1),
// 3 BM, 4 BN, 5 BK, 6 TM, 7 TN.

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;
layout(constant_id = 3) const uint BM = 64;
layout(constant_id = 4) const uint BN = 64;
layout(constant_id = 5) const uint BK = 8;
layout(constant_id = 6) const uint TM = 8;
layout(constant_id = 7) const uint TN = 8;

shared float mm_sa[BK * BM];  // mm_sa[kk * BM + row]
shared float mm_sb[BK * BN];  // mm_sb[kk * BN + col]
float mm_acc[TM * TN];        // this invocation's TM×TN outputs, row-major

float mm_load_a(uint row, uint kk);
float mm_load_b(uint kk, uint col);
void mm_write(uint row, uint col, float acc);

void mm_zero() {
  for (uint i = 0; i < TM * TN; i++) mm_acc[i] = 0.0;
}

// Stages op(A)[row0 .. row0+BM, k0 .. k0+BK] and op(B)[k0 .. k0+BK, col0 .. col0+BN] into
// shared memory, zero outside [0, m) × [0, kEnd) and [0, kEnd) × [0, n). Brackets itself with
// barriers; must be called in workgroup-uniform control flow.
void mm_stage(uint row0, uint col0, uint k0, uint m, uint n, uint kEnd) {
  const uint threads = (BM / TM) * (BN / TN);
  const uint tid = gl_LocalInvocationID.x;
  barrier();  // the previous step's reads of mm_sa / mm_sb are done
  for (uint idx = tid; idx < BM * BK; idx += threads) {
#if MM_A_K_FAST
    uint kk = idx % BK, r = idx / BK;
#else
    uint r = idx % BM, kk = idx / BM;
#endif
    uint row = row0 + r, k = k0 + kk;
    mm_sa[kk * BM + r] = (row < m && k < kEnd) ? mm_load_a(row, k) : 0.0;
  }
  for (uint idx = tid; idx < BN * BK; idx += threads) {
#if MM_B_K_FAST
    uint kk = idx % BK, c = idx / BK;
#else
    uint c = idx % BN, kk = idx / BN;
#endif
    uint col = col0 + c, k = k0 + kk;
    mm_sb[kk * BN + c] = (col < n && k < kEnd) ? mm_load_b(k, col) : 0.0;
  }
  barrier();
}

// mm_acc += staged A tile · staged B tile.
void mm_multiply() {
  const uint tx = gl_LocalInvocationID.x % (BN / TN);
  const uint ty = gl_LocalInvocationID.x / (BN / TN);
  float a[TM];
  float b[TN];
  for (uint kk = 0; kk < BK; kk++) {
    for (uint i = 0; i < TM; i++) a[i] = mm_sa[kk * BM + ty * TM + i];
    for (uint j = 0; j < TN; j++) b[j] = mm_sb[kk * BN + tx * TN + j];
    for (uint i = 0; i < TM; i++)
      for (uint j = 0; j < TN; j++) mm_acc[i * TN + j] += a[i] * b[j];
  }
}

// Full K loop over [0, kEnd): mm_acc += op(A)[tile rows, :] · op(B)[:, tile cols].
void mm_accumulate(uint row0, uint col0, uint m, uint n, uint kEnd) {
  for (uint k0 = 0; k0 < kEnd; k0 += BK) {
    mm_stage(row0, col0, k0, m, n, kEnd);
    mm_multiply();
  }
}

// Calls mm_write for each of this invocation's outputs inside [0, m) × [0, n).
void mm_store(uint row0, uint col0, uint m, uint n) {
  const uint tx = gl_LocalInvocationID.x % (BN / TN);
  const uint ty = gl_LocalInvocationID.x / (BN / TN);
  for (uint i = 0; i < TM; i++) {
    uint row = row0 + ty * TM + i;
    if (row >= m) break;
    for (uint j = 0; j < TN; j++) {
      uint col = col0 + tx * TN + j;
      if (col < n) mm_write(row, col, mm_acc[i * TN + j]);
    }
  }
}
