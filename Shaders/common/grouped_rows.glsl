// Expert segments of rows for the grouped products (grouped_matmul.comp,
// grouped_matmul_nf4.comp): segment x is rows offsets[x] ..< offsets[x + 1], device data the
// host never reads, so every grid covers the worst case (all R rows) and the data decides
// what each workgroup does.
//
// The including shader defines GROUPED_OFFSETS (the binding slot of the E + 1 i32 offsets,
// declared here) and includes common/push.glsl and common/matmul_tile.glsl (BM, BN) first;
// after this file it defines
//   void grouped_segment(uint x, uint row0, uint rowHi)
// which computes every column tile of rows row0 ..< rowHi with expert x's matrix (rows below
// `rowLo` belong to another segment: mm_write must skip them).

layout(set = 0, binding = GROUPED_OFFSETS) readonly buffer BufOffsets { int offsets[]; };

uint rowLo;  // rows below this one belong to another segment

void grouped_segment(uint x, uint row0, uint rowHi);

// offsets[x], clamped to [0, limit] so that malformed offsets never index out of bounds.
uint segment_bound(uint x, uint limit) {
  int v = offsets[pc.boff[GROUPED_OFFSETS] + x];
  return v < 0 ? 0u : min(uint(v), limit);
}

// Walks the row tiles of c (m rows) over `experts` segments. A row tile never spans two
// segments when the segments start at multiples of BM; for any other offsets (Swift's
// `moeRowAlignment` is 1: unpadded segments) a tile is computed once per segment it meets
// and each pass writes only that segment's rows (`rowLo`), at most E − 1 extra passes. Rows from offsets[E] on
// are never written. Every branch is workgroup-uniform (the tile loops hold barriers).
void grouped_rows(uint experts, uint m) {
  const uint tilesM = (m + BM - 1) / BM;
  uint end = segment_bound(experts, m);  // rows from here on are left alone
  for (uint ty = gl_WorkGroupID.y; ty < tilesM; ty += gl_NumWorkGroups.y) {
    uint row0 = ty * BM;
    if (row0 >= end) break;  // later tiles start further down
    // The first segment ending after row0 (offsets rise), by bisection.
    uint lo = 0u, hi = experts;
    while (lo < hi) {
      uint mid = (lo + hi) / 2u;
      if (segment_bound(mid + 1u, end) <= row0) lo = mid + 1u; else hi = mid;
    }
    for (uint x = lo; x < experts; ++x) {
      uint segLo = segment_bound(x, end), segHi = segment_bound(x + 1u, end);
      if (segLo >= row0 + BM) break;
      rowLo = max(segLo, row0);
      uint rowHi = min(segHi, row0 + BM);
      if (rowLo >= rowHi) continue;  // an empty segment
      grouped_segment(x, row0, rowHi);
    }
  }
}
