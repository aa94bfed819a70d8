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
    let q = UncheckedSendable(UnsafePointer(u8(w.values))), s = UncheckedSendable(UnsafePointer(f32(w.scales)))
    let z = UncheckedSendable(w.zeroPoints.map { UnsafePointer(f32($0)) })
    try panelMatmul(x, rowsW: w.rows, colsW: w.cols, into: y, m: m, n: n, k: k, transposeB: transposeB,
                    alpha: alpha, beta: beta) { elements, buffer in
      let panel = UncheckedSendable(buffer), first = elements.lowerBound
      CPUParallel.forRanges(elements.count, cost: 2) { r in
        Int8Weight.dequantize(q.value, scales: s.value, zeroPoints: z.value, blockSize: w.blockSize,
                              elements: (first + r.lowerBound)..<(first + r.upperBound), into: panel.value + r.lowerBound)
      }
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
