import VKFCore

// Global reductions: sumOfSquares (sum_of_squares.comp, two deterministic passes).

/// Push constants of sum_of_squares.comp (after the 8 binding offsets).
struct SumOfSquaresPush {
  /// Input elements.
  var n: UInt32
  /// Elements each workgroup reduces.
  var perGroup: UInt32
}

extension VulkanBackend {
  /// Strided elements each invocation sums before the workgroup tree in pass 1: fewer
  /// partials for pass 2, while each serial chain stays short.
  static let sumOfSquaresItemsPerInvocation = 16

  /// sum_of_squares.comp: out[0] += Σ x², via per-workgroup partials in scratch and one
  /// final workgroup (deterministic: no float atomics).
  public func sumOfSquares(_ x: Tensor, into out: Tensor) throws {
    let op = Op.sumOfSquares
    try checkOwnership(op, x, out)
    try ShapeCheck.sumOfSquares(x, out)
    guard x.count > 0 else { return }
    let n = try shaderUInt(x.count, op)
    let perGroup = blockWorkgroupSize * Self.sumOfSquaresItemsPerInvocation
    let groups = (x.count + perGroup - 1) / perGroup
    let push = SumOfSquaresPush(n: n, perGroup: try shaderUInt(perGroup, op))
    if groups == 1 {
      try dispatch("sum_of_squares", defines: reductionVariant(["SQUARE": "1", "ACCUMULATE": "1"]),
                   specialization: blockSpecialization, bindings: [x, out], push: push,
                   groups: (1, 1, 1))
      return
    }
    let partial = try scratch(count: groups)
    try dispatch("sum_of_squares", defines: reductionVariant(["SQUARE": "1", "ACCUMULATE": "0"]),
                 specialization: blockSpecialization, bindings: [x, partial], push: push,
                 groups: try spreadGroups(groups, op: op))
    let g = try shaderUInt(groups, op)
    try dispatch("sum_of_squares", defines: reductionVariant(["SQUARE": "0", "ACCUMULATE": "1"]),
                 specialization: blockSpecialization, bindings: [partial, out],
                 push: SumOfSquaresPush(n: g, perGroup: g), groups: (1, 1, 1))
  }
}
