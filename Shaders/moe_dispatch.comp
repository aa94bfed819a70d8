#version 450
// moe_dispatch: groups the (token, slot) pairs by expert.     CPU twin: CPUBackend.moeDispatch
//   counts[x] = #{pairs p : experts[p] == x}; segment x is rows offsets[x] ..< offsets[x + 1],
//   offsets[0] = 0, offsets[x + 1] = offsets[x] + ceil(counts[x] / alignment)·alignment;
//   pair p of expert x goes to row slots[p] = offsets[x] + #{q < p : experts[q] == x} (its
//   rank among that expert's pairs in pair = token order) and sources[slots[p]] = p; every
//   other row (padding, and the rows from offsets[e] on) holds −1. The same integers as
//   the CPU's; no atomics, so nothing depends on scheduling.
//   The rank is counted in chunks of `chunk` pairs: hist[c·e + x] = the pairs of expert x in
//   chunk c, turned by PASS 1 into the count before chunk c, so pass 2 scans at most one chunk.
//   A pair whose expert is outside [0, e) (the CPU backend throws) is left out of every
//   count and gets slots[p] = −1.
// Shapes: experts (pairs) i32, pairs = n·k; offsets (e + 1) i32; slots (pairs) i32;
//   sources (rows) i32, rows ≥ MoE.rowCapacity; hist ((chunks + 1)·e) u32 scratch.
// Passes (PASS define; the Swift `MoEDispatchPass` mirrors the list), push fields shared
//   (after boff[8]): pairs, e, alignment, rows, chunk, chunks → Swift `MoEDispatchPush`.
//   PASS 0  count. Bindings: 0 experts (readonly), 1 hist, 2 sources. One invocation per
//           (chunk c, expert x) pair, g = c·e + x, counting its chunk (≤ chunk iterations),
//           and per row g < rows writing sources[g] = −1; max(chunks·e, rows) invocations.
//   PASS 1  scan. Bindings: 0 hist (read and written), 1 offsets. One workgroup; invocation t
//           takes experts t, t + WG, …: an exclusive prefix over the chunks (chunks
//           iterations), the padded count into hist[chunks·e + x], a barrier, then
//           offsets[x] = Σ_{x' < x} padded counts (e iterations).
//   PASS 2  scatter. Bindings: 0 experts, 1 hist, 2 offsets (readonly), 3 slots, 4 sources.
//           One invocation per pair (≤ chunk iterations).
//   All grids: workgroups of spec constant 0 on a 2D grid (common/grid.glsl).
// variant: PASS=1
// variant: PASS=2
#ifndef PASS
#define PASS 0
#endif
#include "common/push.glsl"
#include "common/grid.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

PUSH_BEGIN
  uint pairs;
  uint e;
  uint alignment;
  uint rows;
  uint chunk;
  uint chunks;
PUSH_END

#if PASS == 0
layout(set = 0, binding = 0) readonly buffer BufExperts { int experts[]; };
layout(set = 0, binding = 1) buffer BufHist { uint hist[]; };
layout(set = 0, binding = 2) buffer BufSources { int sources[]; };

void main() {
  uint g = global_linear_id();
  if (g < pc.rows) sources[pc.boff[2] + g] = -1;
  if (g >= pc.chunks * pc.e) return;
  uint c = g / pc.e;
  int x = int(g - c * pc.e);
  uint first = c * pc.chunk, last = min(first + pc.chunk, pc.pairs);
  uint count = 0u;
  for (uint p = first; p < last; ++p) {
    if (experts[pc.boff[0] + p] == x) count += 1u;
  }
  hist[pc.boff[1] + g] = count;
}

#elif PASS == 1
layout(set = 0, binding = 0) coherent buffer BufHist { uint hist[]; };
layout(set = 0, binding = 1) buffer BufOffsets { int offsets[]; };

void main() {
  uint t = gl_LocalInvocationID.x;
  uint totals = pc.boff[0] + pc.chunks * pc.e;
  for (uint x = t; x < pc.e; x += WG_SIZE) {
    uint before = 0u;
    for (uint c = 0u; c < pc.chunks; ++c) {
      uint i = pc.boff[0] + c * pc.e + x;
      uint v = hist[i];
      hist[i] = before;
      before += v;
    }
    hist[totals + x] = (before + pc.alignment - 1u) / pc.alignment * pc.alignment;
  }
  memoryBarrierBuffer();
  barrier();
  for (uint x = t; x < pc.e; x += WG_SIZE) {
    uint start = 0u;
    for (uint y = 0u; y < x; ++y) start += hist[totals + y];
    offsets[pc.boff[1] + x] = int(start);
    if (x + 1u == pc.e) offsets[pc.boff[1] + pc.e] = int(start + hist[totals + x]);
  }
}

#else
layout(set = 0, binding = 0) readonly buffer BufExperts { int experts[]; };
layout(set = 0, binding = 1) readonly buffer BufHist { uint hist[]; };
layout(set = 0, binding = 2) readonly buffer BufOffsets { int offsets[]; };
layout(set = 0, binding = 3) buffer BufSlots { int slots[]; };
layout(set = 0, binding = 4) buffer BufSources { int sources[]; };

void main() {
  uint p = global_linear_id();
  if (p >= pc.pairs) return;
  int x = experts[pc.boff[0] + p];
  if (x < 0 || uint(x) >= pc.e) {
    slots[pc.boff[3] + p] = -1;
    return;
  }
  uint c = p / pc.chunk;
  uint rank = hist[pc.boff[1] + c * pc.e + uint(x)];
  for (uint q = c * pc.chunk; q < p; ++q) {
    if (experts[pc.boff[0] + q] == x) rank += 1u;
  }
  uint row = uint(offsets[pc.boff[2] + uint(x)]) + rank;
  slots[pc.boff[3] + p] = int(row);
  if (row < pc.rows) sources[pc.boff[4] + row] = int(p);
}
#endif
