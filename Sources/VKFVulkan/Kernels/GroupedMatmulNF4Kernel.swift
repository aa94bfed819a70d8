import VKFCore

// Per-expert products over segments of rows with the experts frozen as one NF4 weight
// (grouped_matmul_nf4.comp: grouped_matmul.comp's segment walk, matmul_nf4.comp's decoding).
// Legend: E experts, R expert rows (of a and c), r rows of each expert's matrix.

/// Push constants of `Shaders/grouped_matmul_nf4.comp`, after the 8 binding offsets (field
/// order matters).
struct GroupedMatmulNF4Push {
  /// Rows R of a and c, and c's columns.
  var m: UInt32, n: UInt32
  /// This dispatch's K slice: its length and its first k.
  var k: UInt32, kFirst: UInt32
  /// a's row length (the whole reduction).
  var lda: UInt32
  /// Columns of the stacked W as stored.
  var cols: UInt32
  /// Elements from one expert's matrix to the next: r·cols.
  var strideB: UInt32
  /// E.
  var experts: UInt32
  /// Elements per absmax block.
  var blockSize: UInt32
  var beta: Float
  var absmax: NF4AbsmaxPush
}

extension VulkanBackend {
  /// grouped_matmul_nf4.comp: `groupedMatmul` (not transposeA) with W (E·r, cols) NF4,
  /// dequantised tile by tile. The segment offsets stay on the device (the grid covers all R
  /// rows; tiles past offsets[E] exit). On drivers that cap loop iterations (`matmulMaxK`)
  /// the reduction runs as K slices, one dispatch each, accumulated through β; the shader
  /// indexes a and W from the slice's first k, so no view of the packed weight is needed
  /// and a slice may start mid-byte.
  public func groupedMatmulNF4(_ a: Tensor, _ w: NF4Weight, experts: Int, into c: Tensor, offsets: Tensor,
                               transposeB: Bool, beta: Float) throws {
    let op = Op.groupedMatmulNF4
    try checkOwnership(op, [a, offsets] + w.tensors + [c])
    let g = try ShapeCheck.groupedMatmulNF4(a, w, experts: experts, c, offsets: offsets, transposeB: transposeB)
    guard g.rows > 0, g.n > 0 else { return }
    // a: (R, k); W: (E·r, cols); c: (R, n). Element indices of all three fit in a uint.
    _ = try shaderUInt(max(a.count, c.count, w.rows * w.cols), op)
    let t = MatmulTiling.current
    let s = nf4Absmax(w)
    var push = GroupedMatmulNF4Push(
      m: try shaderUInt(g.rows, op), n: try shaderUInt(g.n, op), k: try shaderUInt(g.k, op), kFirst: 0,
      lda: try shaderUInt(g.k, op), cols: try shaderUInt(w.cols, op),
      strideB: try shaderUInt(g.perExpert * w.cols, op), experts: try shaderUInt(experts, op),
      blockSize: try shaderUInt(w.blockSize, op), beta: beta, absmax: s.push)
    let defines = ["TRANS_B": transposeB ? "1" : "0", "NF4_DQ": s.define]
    let groups = t.groups(m: g.rows, n: g.n, limits: gridLimits)
    // A multiple of 64 as in `groupedMatmul`, unless a test asks for less.
    let slice = max(1, Self.groupedSliceOverride ?? capabilities.matmulMaxK.map { max(64, $0 / 64 * 64) } ?? g.k)
    var k0 = 0
    repeat {
      let kc = min(slice, g.k - k0)
      push.k = try shaderUInt(kc, op)
      push.kFirst = try shaderUInt(k0, op)
      push.beta = k0 == 0 ? beta : 1
      try dispatch("grouped_matmul_nf4", defines: defines, specialization: t.specialization,
                   bindings: [a, w.packed, s.absmax, offsets, c] + s.nested, push: push, groups: groups)
      k0 += kc
    } while k0 < g.k
  }
}
