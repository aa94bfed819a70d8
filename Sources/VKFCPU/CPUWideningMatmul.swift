import VKFCore

/// `matmul` with an f16 or bf16 operand (frozen weights stored 16-bit, 16-bit activations):
/// panels of the 16-bit operand's stored rows are widened to f32 — what matmul.comp does as
/// it stages a tile — and multiplied by sgemm, so results match the shader's up to the order
/// of the f32 sums and the widened copy never exceeds `widenPanelElements` per operand (8 MiB).
extension CPUBackend {
  /// One operand of a widening product: its storage, stored (rows, ld) layout and whether
  /// its stored rows run along k.
  private struct Operand {
    let tensor: Tensor
    let rows: Int, ld: Int
    /// True when a stored row is one k (A transposed, B not): its panels split the reduction.
    let rowsAreK: Bool
    var isHalf: Bool { tensor.dtype.size == 2 }
  }

  /// C = α·op(A)·op(B) + β·C for a checked shape `g` where A or B is f16/bf16.
  func wideningMatmul(_ a: Tensor, _ b: Tensor, into c: Tensor, _ g: GemmShape, transposeA: Bool,
                      transposeB: Bool, alpha: Float, beta: Float) throws {
    let opA = Operand(tensor: a, rows: transposeA ? g.k : g.m, ld: g.lda, rowsAreK: transposeA)
    let opB = Operand(tensor: b, rows: transposeB ? g.n : g.k, ld: g.ldb, rowsAreK: !transposeB)
    let rowsA = opA.isHalf ? max(1, min(opA.rows, widenPanelElements / max(opA.ld, 1))) : opA.rows
    let rowsB = opB.isHalf ? max(1, min(opB.rows, widenPanelElements / max(opB.ld, 1))) : opB.rows
    let shared = opA.rowsAreK && opB.rowsAreK  // both split k: one panel loop for both
    let rowsK = min(rowsA, rowsB)
    let bufferA = opA.isHalf ? (shared ? rowsK : rowsA) * opA.ld : 0
    let bufferB = opB.isHalf ? (shared ? rowsK : rowsB) * opB.ld : 0
    let buffer = try scratch.floats(max(bufferA + bufferB, 1))
    let wideA = buffer, wideB = buffer + bufferA
    let pc = f32(c)

    for z in 0..<g.batch {
      /// Pointer to stored element (row, col) of `op`'s batch entry z, widening rows `panel`
      /// into `wide` first when it is 16-bit (the panel is converted once per call of `load`).
      func load(_ op: Operand, stride: Int, panel: Range<Int>, into wide: UnsafeMutablePointer<Float>)
        -> (Int, Int) -> UnsafePointer<Float> {
        let base = z * stride
        guard op.isHalf else {
          let p = UnsafePointer(f32(op.tensor)) + base
          return { row, col in p + row * op.ld + col }
        }
        let src = UnsafePointer(u16(op.tensor)) + base + panel.lowerBound * op.ld
        if op.tensor.dtype == .bf16 {
          CPUCast.bf16ToF32(src, wide, panel.count * op.ld)
        } else {
          CPUCast.f16ToF32(src, wide, panel.count * op.ld)
        }
        let p = UnsafePointer(wide)
        return { row, col in p + (row - panel.lowerBound) * op.ld + col }
      }
      /// sgemm over C rows `mr`, columns `nr` and reduction slice `kr` (β only on k's first slice).
      func multiply(_ pa: (Int, Int) -> UnsafePointer<Float>, _ pb: (Int, Int) -> UnsafePointer<Float>,
                    m mr: Range<Int>, n nr: Range<Int>, k kr: Range<Int>) {
        let aPtr = transposeA ? pa(kr.lowerBound, mr.lowerBound) : pa(mr.lowerBound, kr.lowerBound)
        let bPtr = transposeB ? pb(nr.lowerBound, kr.lowerBound) : pb(kr.lowerBound, nr.lowerBound)
        CPUBackend.sgemm(transposeA, transposeB, m: mr.count, n: nr.count, k: kr.count, alpha: alpha,
                         a: aPtr, lda: g.lda, b: bPtr, ldb: g.ldb,
                         beta: kr.lowerBound == 0 ? beta : 1,
                         c: pc + z * g.strideC + mr.lowerBound * g.ldc + nr.lowerBound, ldc: g.ldc)
      }
      if shared {
        for k0 in stride(from: 0, to: g.k, by: rowsK) {
          let kr = k0..<min(g.k, k0 + rowsK)
          let pa = load(opA, stride: g.strideA, panel: kr, into: wideA)
          let pb = load(opB, stride: g.strideB, panel: kr, into: wideB)
          multiply(pa, pb, m: 0..<g.m, n: 0..<g.n, k: kr)
        }
        continue
      }
      for b0 in stride(from: 0, to: max(opB.rows, 1), by: rowsB) {
        let br = b0..<min(opB.rows, b0 + rowsB)
        let pb = load(opB, stride: g.strideB, panel: br, into: wideB)
        for a0 in stride(from: 0, to: max(opA.rows, 1), by: rowsA) {
          let ar = a0..<min(opA.rows, a0 + rowsA)
          let pa = load(opA, stride: g.strideA, panel: ar, into: wideA)
          multiply(pa, pb, m: opA.rowsAreK ? 0..<g.m : ar, n: opB.rowsAreK ? 0..<g.n : br,
                   k: opA.rowsAreK ? ar : (opB.rowsAreK ? br : 0..<g.k))
        }
      }
    }
  }
}
