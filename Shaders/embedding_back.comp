#version 450
// embedding_back: dTable[ids[i], :] += dOut[i, :] for every token i, accumulated.
//                                                   CPU twin: CPUBackend.embeddingBackward
// Shapes: ids (n) i32; dOut (n, cols) f32; dTable (vocab, cols) f32.
// Determinism without float atomics: workgroup i handles token i only if no earlier token
//   j < i has the same id; it then adds dOut[k] for every token k ≥ i with that id, in
//   token order, into the row — the same additions in the same order as the CPU loop, and
//   no two workgroups touch the same row. Tokens are scanned RED_WG at a time; a chunk's
//   matches are counted with an integer shared atomic and chunks without matches are
//   skipped, so a workgroup costs O(n / RED_WG) barriers plus its matches.
// Ids outside [0, vocab) are skipped (the CPU backend throws; see embedding.comp).
// Bindings: 0 ids, 1 dOut (readonly), 2 dTable (read and written).
// Push (after boff[8]): n, cols, vocab → Swift `EmbeddingPush` (shared with embedding.comp).
// Dispatch: one workgroup per token (2D grid), RED_WG invocations; invocation t owns
//   columns t, t + RED_WG, ….
#include "common/push.glsl"
#include "common/grid.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;
#define RED_WG WG_SIZE

layout(set = 0, binding = 0) readonly buffer BufIds { int ids[]; };
layout(set = 0, binding = 1) readonly buffer BufDOut { float dout[]; };
layout(set = 0, binding = 2) buffer BufDTable { float dtable[]; };

PUSH_BEGIN
  uint n;
  uint cols;
  uint vocab;
PUSH_END

shared uint s_count;
shared uint s_match[RED_WG];

void main() {
  uint i = wg_linear_id();
  if (i >= pc.n) return;  // uniform over the workgroup
  uint t = gl_LocalInvocationID.x;
  int id = ids[pc.boff[0] + i];
  if (id < 0 || uint(id) >= pc.vocab) return;  // uniform: every invocation read the same id

  // 1. Does an earlier token carry the same id? Then that token's workgroup owns the row.
  if (t == 0u) s_count = 0u;
  barrier();
  for (uint k = t; k < i; k += RED_WG) {
    if (ids[pc.boff[0] + k] == id) atomicOr(s_count, 1u);
  }
  memoryBarrierShared();
  barrier();
  if (s_count != 0u) return;  // uniform: read after the barrier by everyone
  barrier();                  // everyone has read s_count before it is reset below

  // 2. Add dOut[k] for k = i, i+1, … with ids[k] == id, in token order.
  uint rowBase = pc.boff[2] + uint(id) * pc.cols;
  for (uint k0 = i; k0 < pc.n; k0 += RED_WG) {
    if (t == 0u) s_count = 0u;
    barrier();
    uint k = k0 + t;
    uint hit = (k < pc.n && ids[pc.boff[0] + k] == id) ? 1u : 0u;
    s_match[t] = hit;
    if (hit != 0u) atomicAdd(s_count, 1u);
    memoryBarrierShared();
    barrier();
    if (s_count != 0u) {  // uniform
      uint qEnd = min(RED_WG, pc.n - k0);
      for (uint q = 0u; q < qEnd; ++q) {
        if (s_match[q] == 0u) continue;
        uint src = pc.boff[1] + (k0 + q) * pc.cols;
        for (uint c = t; c < pc.cols; c += RED_WG) dtable[rowBase + c] += dout[src + c];
      }
    }
    barrier();  // s_count and s_match are rewritten by the next chunk
  }
}
