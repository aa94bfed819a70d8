import VKFCore

// Per-expert products over segments of rows (grouped_matmul.comp, on the tiles of
// common/matmul_tile.glsl).
// Legend: E experts, R expert rows; (m, n, k) as in `ShapeCheck.GroupedGemm`.

/// Push constants of `Shaders/grouped_matmul.comp`, after the 8 binding offsets (field order
/// matters).
struct GroupedMatmulPush {
  /// Rows of c (not transposeA: R; transposeA: each c[e]'s rows) and c's columns.
  var m: UInt32, n: UInt32
  /// Not transposeA: this dispatch's K slice; transposeA: the rows R of a and b.
  var k: UInt32
  /// Row lengths of a and b as stored.
  var lda: UInt32, ldb: UInt32
  /// Elements from one expert's b (not transposeA) / c (transposeA) to the next.
  var strideB: UInt32, strideC: UInt32
  /// E.
  var experts: UInt32
  /// transposeA: the first row of each segment this dispatch adds, and how many at most.
  var sliceFirst: UInt32, sliceRows: UInt32
  var beta: Float
}

/// The `#define` variants of grouped_matmul.comp.
enum GroupedMatmulVariant {
  /// TRANS_A: the weight-gradient form; TRANS_B: b[e] stored (n, k); B_TYPE: b's storage
  /// code (0 f32, 1 f16, 2 bf16: `castTypeCodes`).
  static func defines(transposeA: Bool, transposeB: Bool, bType: String = "0") -> [String: String] {
    ["TRANS_A": transposeA ? "1" : "0", "TRANS_B": transposeB ? "1" : "0", "B_TYPE": bType]
  }
}

extension VulkanBackend {
  /// Tests set this to a few rows so the K slices (not transposeA) and segment-row slices
  /// (transposeA), which normally only lavapipe takes, are exercised on small inputs; nil
  /// in production.
  nonisolated(unsafe) static var groupedSliceOverride: Int?

  /// Expert segments are not padded (1): a tile of rows that meets several segments is
  /// multiplied once per segment, writing that segment's rows only, which costs at most E − 1
  /// extra tile passes — what padding every segment to the tile height BM costs too (Σ_e
  /// ⌈n_e / BM⌉ ≤ N·K / BM + E tiles) — without padding's up to E·(BM − 1) rows in every expert
  /// buffer, gather and combine (half the rows at Qwen3-MoE's 128 experts, top-8, 2048 tokens).
  /// Not yet measured on a GPU.
  public var moeRowAlignment: Int { 1 }

  /// grouped_matmul.comp. The segment offsets stay on the device: not transposeA, the grid
  /// covers all R rows and tiles past offsets[E] exit; transposeA, every segment may hold up
  /// to R rows, so on drivers that cap loop iterations (`matmulMaxK`) the rows are taken in
  /// slices of that many, one dispatch each, accumulated through β.
  public func groupedMatmul(_ a: Tensor, _ b: Tensor, into c: Tensor, offsets: Tensor, transposeA: Bool,
                            transposeB: Bool, beta: Float) throws {
    let op = Op.groupedMatmul
    try checkOwnership(op, a, b, c, offsets)
    let g = try ShapeCheck.groupedMatmul(a, b, c, offsets: offsets, transposeA: transposeA, transposeB: transposeB)
    guard g.m > 0, g.n > 0 else { return }
    let t = MatmulTiling.current
    let defines = GroupedMatmulVariant.defines(transposeA: transposeA, transposeB: transposeB,
                                               bType: castTypeCodes[b.dtype] ?? "0")
    let capped = Self.groupedSliceOverride ?? capabilities.matmulMaxK
    if transposeA {
      // a: (R, m); b: (R, n); c: (E, m, n)
      _ = try shaderUInt(g.experts * g.m * g.n, op)
      let sliceRows = max(1, capped ?? g.rows)
      var push = GroupedMatmulPush(
        m: try shaderUInt(g.m, op), n: try shaderUInt(g.n, op), k: try shaderUInt(g.rows, op),
        lda: try shaderUInt(g.m, op), ldb: try shaderUInt(g.n, op), strideB: 0,
        strideC: try shaderUInt(g.m * g.n, op), experts: try shaderUInt(g.experts, op),
        sliceFirst: 0, sliceRows: try shaderUInt(sliceRows, op), beta: beta)
      let groups = t.groups(m: g.m, n: g.n, batch: g.experts, limits: gridLimits)
      // The worst case: one segment of all R rows (at least one slice: it applies β).
      var first = 0
      repeat {
        push.sliceFirst = try shaderUInt(first, op)
        push.beta = first == 0 ? beta : 1
        try dispatch("grouped_matmul", defines: defines, specialization: t.specialization,
                     bindings: [a, b, offsets, c], push: push, groups: groups)
        first += sliceRows
      } while first < g.rows
      return
    }
    // a: (R, k); b: (E, n, k) transposeB or (E, k, n); c: (R, n)
    _ = try shaderUInt(max(a.count, b.count, c.count), op)
    var push = GroupedMatmulPush(
      m: try shaderUInt(g.rows, op), n: try shaderUInt(g.n, op), k: try shaderUInt(g.k, op),
      lda: try shaderUInt(g.k, op), ldb: try shaderUInt(transposeB ? g.k : g.n, op),
      strideB: try shaderUInt(g.n * g.k, op), strideC: 0, experts: try shaderUInt(g.experts, op),
      sliceFirst: 0, sliceRows: 0, beta: beta)
    let groups = t.groups(m: g.rows, n: g.n, limits: gridLimits)
    // K slices as in `matmul` (views starting at the slice's first k, full row lengths); a
    // multiple of 64 unless a test asks for less.
    let slice = Self.groupedSliceOverride ?? capabilities.matmulMaxK.map { max(64, $0 / 64 * 64) } ?? g.k
    var k0 = 0
    repeat {
      let kc = min(max(slice, 1), g.k - k0)
      let offsetB = transposeB ? k0 : k0 * g.n
      let av = k0 == 0 ? a : try a.view(offset: k0, shape: [a.count - k0])
      let bv = k0 == 0 ? b : try b.view(offset: offsetB, shape: [b.count - offsetB])
      push.k = try shaderUInt(kc, op)
      push.beta = k0 == 0 ? beta : 1
      try dispatch("grouped_matmul", defines: defines, specialization: t.specialization,
                   bindings: [av, bv, offsets, c], push: push, groups: groups)
      k0 += kc
    } while k0 < g.k
  }
}
