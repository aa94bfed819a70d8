import COpenBLAS
import VKFCore

// MARK: - Dense and NF4 matrix products (OpenBLAS sgemm, row-major)

extension CPUBackend {
  public func matmul(_ a: Tensor, _ b: Tensor, into c: Tensor, transposeA: Bool,
                     transposeB: Bool, alpha: Float, beta: Float) throws {
    try validate(.matmul, a, b, c)
    var g = try ShapeCheck.matmul(a, b, c, transposeA: transposeA, transposeB: transposeB)
    // A (batch, m, k) times a shared B is one tall product: (batch·m, k)·B → (batch·m, n).
    // Small-m batches (per-head attention, LoRA) then run as one efficient sgemm.
    if !transposeA, g.batch > 1, g.strideA == g.m * g.k, g.strideB == 0 {
      g = GemmShape(batch: 1, m: g.batch * g.m, n: g.n, k: g.k, strideA: 0, strideB: 0,
                    strideC: 0, lda: g.lda, ldb: g.ldb)
    }
    if a.dtype != .f32 || b.dtype != .f32 {
      return try wideningMatmul(a, b, into: c, g, transposeA: transposeA, transposeB: transposeB,
                                alpha: alpha, beta: beta)
    }
    let pa = f32(a), pb = f32(b), pc = f32(c)
    for i in 0..<g.batch {
      CPUBackend.sgemm(transposeA, transposeB, m: g.m, n: g.n, k: g.k, alpha: alpha,
                       a: pa + i * g.strideA, lda: g.lda, b: pb + i * g.strideB, ldb: g.ldb,
                       beta: beta, c: pc + i * g.strideC, ldc: g.ldc)
    }
  }

  /// C (m, n) = α·op(A)·op(B) + β·C, row-major; handles the empty cases OpenBLAS rejects.
  static func sgemm(_ ta: Bool, _ tb: Bool, m: Int, n: Int, k: Int, alpha: Float,
                    a: UnsafePointer<Float>, lda: Int, b: UnsafePointer<Float>, ldb: Int,
                    beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int) {
    guard m > 0, n > 0 else { return }
    guard k > 0 else {
      // BLAS semantics with nothing to add: C = β·C, and β = 0 clears NaN garbage.
      for i in 0..<m {
        let row = c + i * ldc
        if beta == 0 { row.update(repeating: 0, count: n) } else { for j in 0..<n { row[j] *= beta } }
      }
      return
    }
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                blasint(m), blasint(n), blasint(k), alpha, a, blasint(max(lda, 1)),
                b, blasint(max(ldb, 1)), beta, c, blasint(max(ldc, 1)))
  }

  // MARK: - NF4

  public func dequantizeNF4(_ w: NF4Weight, into out: Tensor) throws {
    try validateTensors(.dequantizeNF4, w.tensors + [out])
    try ShapeCheck.dequantizeNF4(w, out)
    let n = w.rows * w.cols
    let o = UncheckedSendable(f32(out))
    let packed = UncheckedSendable(UnsafePointer(u8(w.packed)))
    withAbsmax(w) { a in
      let absmax = UncheckedSendable(a)
      // Parallel over even-sized element ranges so no byte is split between chunks.
      CPUParallel.forRanges(n / 2, cost: 2) { r in
        NF4Kernel.dequantize(packed.value, absmax.value, blockSize: w.blockSize,
                             elements: (2 * r.lowerBound)..<(2 * r.upperBound),
                             into: o.value + 2 * r.lowerBound)
      }
    }
  }

  /// Calls `body` with w's per-block f32 absmax: the tensor itself, or the double-quantised
  /// codes decoded into a temporary array (one float per block, 1/64 of the weight).
  func withAbsmax<R>(_ w: NF4Weight, _ body: (UnsafePointer<Float>) throws -> R) rethrows -> R {
    switch w.scales {
    case .f32(let absmax):
      return try body(UnsafePointer(f32(absmax)))
    case .doubleQuantized(let codes, let scales, let offset):
      var decoded = [Float](repeating: 0, count: max(w.blockCount, 1))
      decoded.withUnsafeMutableBufferPointer { d in
        guard let out = d.baseAddress else { return }
        NF4DoubleQuant.decode(codes: UnsafePointer(u8(codes)), scales: UnsafePointer(f32(scales)),
                              offset: offset, count: w.blockCount, into: out)
      }
      return try decoded.withUnsafeBufferPointer { d in
        // Non-empty by construction (count ≥ 1 above).
        try body(d.baseAddress.unsafelyUnwrapped)
      }
    }
  }

  public func matmulNF4(_ x: Tensor, _ w: NF4Weight, into y: Tensor, transposeB: Bool,
                        alpha: Float, beta: Float) throws {
    try validateTensors(.matmulNF4, [x] + w.tensors + [y])
    let (m, n, k) = try ShapeCheck.matmulNF4(x, w, y, transposeB: transposeB)
    let packed = UnsafePointer(u8(w.packed))
    try withAbsmax(w) { absmax in
      try panelMatmul(x, rowsW: w.rows, colsW: w.cols, into: y, m: m, n: n, k: k, transposeB: transposeB,
                      alpha: alpha, beta: beta) { elements, buffer in
        NF4Kernel.dequantizeParallel(packed, absmax, blockSize: w.blockSize, elements: elements, into: buffer)
      }
    }
  }
}

/// NF4 decoding shared by `dequantizeNF4` and `matmulNF4`. Element e of the row-major
/// weight is byte e/2 (high nibble when e is even) scaled by absmax[e / blockSize], as in
/// `NF4.dequantize` and bitsandbytes.
enum NF4Kernel {
  /// Both codes of every byte: pairs[2·b] = code[b >> 4], pairs[2·b + 1] = code[b & 15].
  static let pairs: [Float] = (0..<256).flatMap { b in
    [NF4.codebook[b >> 4], NF4.codebook[b & 15]]
  }

  /// Writes elements `elements` of the weight to out[0..<elements.count].
  static func dequantize(_ packed: UnsafePointer<UInt8>, _ absmax: UnsafePointer<Float>,
                         blockSize: Int, elements: Range<Int>, into out: UnsafeMutablePointer<Float>) {
    pairs.withUnsafeBufferPointer { tableBuffer in
      let table = tableBuffer.baseAddress.unsafelyUnwrapped
      var e = elements.lowerBound
      let end = elements.upperBound
      var o = out
      // An odd start (odd column count and a panel boundary) takes the low nibble alone.
      if e < end, e & 1 == 1 {
        o[0] = table[2 * Int(packed[e >> 1]) + 1] * absmax[e / blockSize]
        o += 1; e += 1
      }
      while e + 1 < end {
        // Block sizes are even, so a byte never straddles two blocks.
        let blockEnd = min(end & ~1, (e / blockSize + 1) * blockSize)
        let s = absmax[e / blockSize]
        let pairsInBlock = (blockEnd - e) >> 1
        let bytes = packed + (e >> 1)
        for p in 0..<pairsInBlock {
          let t = 2 * Int(bytes[p])
          o[2 * p] = table[t] * s
          o[2 * p + 1] = table[t + 1] * s
        }
        o += 2 * pairsInBlock; e = blockEnd
      }
      if e < end {  // odd end: the high nibble alone
        o[0] = table[2 * Int(packed[e >> 1])] * absmax[e / blockSize]
      }
    }
  }

  /// `dequantize` split over the cores (chunks start at base + 2i, so a range with an odd
  /// start — an expert's block of a stack — splits its first byte's nibbles between
  /// `dequantize`'s odd-start path and the previous chunk; each writes its own elements).
  static func dequantizeParallel(_ packed: UnsafePointer<UInt8>, _ absmax: UnsafePointer<Float>,
                                 blockSize: Int, elements: Range<Int>,
                                 into out: UnsafeMutablePointer<Float>) {
    let base = elements.lowerBound, count = elements.count
    let p = UncheckedSendable(packed), a = UncheckedSendable(absmax), o = UncheckedSendable(out)
    CPUParallel.forRanges((count + 1) / 2, cost: 2) { r in
      let lo = base + 2 * r.lowerBound, hi = min(base + 2 * r.upperBound, elements.upperBound)
      dequantize(p.value, a.value, blockSize: blockSize, elements: lo..<hi,
                 into: o.value + (lo - base))
    }
  }
}

extension CPUBackend {
  /// y = α·x·op(W) + β·y for a quantised W (rows, cols) that `decode` turns into f32 one
  /// element range at a time. W is processed in panels of whole rows: R = n (forward,
  /// y = x·Wᵀ, a panel of rows gives a block of y's columns) or R = k (input gradient, y = x·W,
  /// a panel of rows is a slice of the reduction, accumulated with β = 1 after the first); a
  /// 16-bit x is widened in chunks of at most `widenPanelElements`, each multiplied by every panel.
  func panelMatmul(_ x: Tensor, rowsW: Int, colsW: Int, into y: Tensor, m: Int, n: Int, k: Int, transposeB: Bool,
                   alpha: Float, beta: Float,
                   decode: (Range<Int>, UnsafeMutablePointer<Float>) -> Void) throws {
    let panelRows = max(1, min(rowsW, nf4PanelElements / max(colsW, 1)))
    let xHalf = x.dtype.size == 2
    let xRows = xHalf ? max(1, min(m, widenPanelElements / max(k, 1))) : max(m, 1)
    let buffer = try scratch.floats(panelRows * colsW + (xHalf ? xRows * k : 0))
    let wideX = buffer + panelRows * colsW
    let py = f32(y)
    for x0 in stride(from: 0, to: max(m, 1), by: xRows) {
      let mr = min(m, x0 + xRows) - x0
      let px: UnsafePointer<Float>
      if xHalf {
        let src = UnsafePointer(u16(x)) + x0 * k
        if x.dtype == .bf16 { CPUCast.bf16ToF32(src, wideX, mr * k) } else { CPUCast.f16ToF32(src, wideX, mr * k) }
        px = UnsafePointer(wideX)
      } else {
        px = UnsafePointer(f32(x)) + x0 * k
      }
      let pyc = py + x0 * n
      var r0 = 0
      repeat {
        let rows = min(panelRows, rowsW - r0)
        decode((r0 * colsW)..<((r0 + rows) * colsW), buffer)
        if transposeB {
          // y[:, r0..<r0+rows] = α·x (m, k)·panelᵀ (k, rows) + β·y
          CPUBackend.sgemm(false, true, m: mr, n: rows, k: k, alpha: alpha, a: px, lda: k,
                           b: buffer, ldb: colsW, beta: beta, c: pyc + r0, ldc: n)
        } else {
          // y (m, n) += α·x[:, r0..<r0+rows] (m, rows)·panel (rows, n)
          CPUBackend.sgemm(false, false, m: mr, n: n, k: rows, alpha: alpha, a: px + r0, lda: k,
                           b: buffer, ldb: colsW, beta: r0 == 0 ? beta : 1, c: pyc, ldc: n)
        }
        r0 += rows
      } while r0 < rowsW
    }
  }
}
