import VKFCore

// int8 weights (post-training quantisation): dequantised panel by panel into scratch and
// multiplied with sgemm, as matmulNF4 does — the dense weight never exists whole.
extension CPUBackend {
  public func dequantizeInt8(_ w: Int8Weight, into out: Tensor) throws {
    try validateTensors(.dequantizeInt8, w.tensors + [out])
    try ShapeCheck.dequantizeInt8(w, out)
    let q = UncheckedSendable(UnsafePointer(u8(w.values))), s = UncheckedSendable(UnsafePointer(f32(w.scales)))
    let z = UncheckedSendable(w.zeroPoints.map { UnsafePointer(f32($0)) }), o = UncheckedSendable(f32(out))
    CPUParallel.forRanges(w.rows * w.cols, cost: 2) { r in
      Int8Weight.dequantize(q.value, scales: s.value, zeroPoints: z.value, blockSize: w.blockSize, elements: r,
                            into: o.value + r.lowerBound)
    }
  }

  public func matmulInt8(_ x: Tensor, _ w: Int8Weight, into y: Tensor, transposeB: Bool,
                         alpha: Float, beta: Float) throws {
    try validateTensors(.matmulInt8, [x] + w.tensors + [y])
    let (m, n, k) = try ShapeCheck.matmulInt8(x, w, y, transposeB: transposeB)
    // Panels of whole rows of W, as matmulNF4: a block of y's columns (forward) or a slice of
    // the reduction accumulated with β = 1 after the first (input gradient).
    let rowsW = w.rows, colsW = w.cols
    let panelRows = max(1, min(rowsW, nf4PanelElements / max(colsW, 1)))
    let xHalf = x.dtype.size == 2
    let xRows = xHalf ? max(1, min(m, widenPanelElements / max(k, 1))) : max(m, 1)
    let buffer = try scratch.floats(panelRows * colsW + (xHalf ? xRows * k : 0))
    let wideX = buffer + panelRows * colsW
    let py = f32(y)
    let q = UncheckedSendable(UnsafePointer(u8(w.values))), s = UncheckedSendable(UnsafePointer(f32(w.scales)))
    let z = UncheckedSendable(w.zeroPoints.map { UnsafePointer(f32($0)) }), panel = UncheckedSendable(buffer)
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
        let rows = min(panelRows, rowsW - r0), first = r0 * colsW
        CPUParallel.forRanges(rows * colsW, cost: 2) { r in
          Int8Weight.dequantize(q.value, scales: s.value, zeroPoints: z.value, blockSize: w.blockSize,
                                elements: (first + r.lowerBound)..<(first + r.upperBound), into: panel.value + r.lowerBound)
        }
        if transposeB {
          CPUBackend.sgemm(false, true, m: mr, n: rows, k: k, alpha: alpha, a: px, lda: k,
                           b: buffer, ldb: colsW, beta: beta, c: pyc + r0, ldc: n)
        } else {
          CPUBackend.sgemm(false, false, m: mr, n: n, k: rows, alpha: alpha, a: px + r0, lda: k,
                           b: buffer, ldb: colsW, beta: r0 == 0 ? beta : 1, c: pyc, ldc: n)
        }
        r0 += rows
      } while r0 < rowsW
    }
  }
}

extension CPUBackend {
  public func fakeQuantize(_ w: Tensor, kind: FakeQuant, into out: Tensor) throws {
    try validateTensors(.fakeQuantize, [w, out])
    let (rows, cols) = try ShapeCheck.fakeQuantize(w, kind: kind, out)
    let src = UncheckedSendable(UnsafePointer(f32(w))), dst = UncheckedSendable(f32(out))
    let blocks = rows * cols / max(kind.blockSize(cols: cols), 1)
    CPUParallel.forRanges(blocks, cost: kind.blockSize(cols: cols) * 3) { r in
      kind.apply(src.value, into: dst.value, cols: cols, blocks: r)
    }
  }
}
