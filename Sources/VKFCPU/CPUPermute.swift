import VKFCore

extension CPUBackend {
  /// out = x with axes reordered (ShapeCheck.permute pads both to rank 4). The innermost
  /// output axis is copied as a run when it is x's innermost axis too (the attention
  /// permutes (B, T, NH, HS) ↔ (B, NH, T, HS) keep HS innermost), else element by element.
  public func permute(_ x: Tensor, dims: [Int], into out: Tensor) throws {
    try validate(.permute, x, out)
    let (shape, strides, d) = try ShapeCheck.permute(x, dims, out)
    guard out.count > 0 else { return }
    // Output axis j walks x with stride strides[d[j]].
    let o = d.map { shape[$0] }, s = d.map { strides[$0] }
    let src = UncheckedSendable(UnsafePointer(f32(x))), dst = UncheckedSendable(f32(out))
    let rows = o[0] * o[1] * o[2], len = o[3], inner = s[3]
    CPUParallel.forRanges(rows, cost: len) { r in
      for row in r {
        let i2 = row % o[2], i1 = (row / o[2]) % o[1], i0 = row / (o[2] * o[1])
        let from = src.value + i0 * s[0] + i1 * s[1] + i2 * s[2], to = dst.value + row * len
        if inner == 1 {
          to.update(from: from, count: len)
        } else {
          for i in 0..<len { to[i] = from[i * inner] }
        }
      }
    }
  }
}
