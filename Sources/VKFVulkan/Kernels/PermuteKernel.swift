import VKFCore

/// Push constants of permute.comp (after the 8 binding offsets).
struct PermutePush {
  var n: UInt32
  /// Output dims 1…3 (dim 0 follows from n).
  var o1: UInt32, o2: UInt32, o3: UInt32
  /// x's element stride along the axis each output axis comes from.
  var s0: UInt32, s1: UInt32, s2: UInt32, s3: UInt32
}

extension VulkanBackend {
  /// permute.comp: out = x with axes reordered (rank ≤ 4), one invocation per element.
  public func permute(_ x: Tensor, dims: [Int], into out: Tensor) throws {
    try checkOwnership(.permute, x, out)
    let (shape, strides, d) = try ShapeCheck.permute(x, dims, out)
    guard out.count > 0 else { return }
    let o = d.map { shape[$0] }, s = d.map { strides[$0] }
    let u = { (v: Int) in try shaderUInt(v, .permute) }
    let push = PermutePush(n: try u(out.count), o1: try u(o[1]), o2: try u(o[2]), o3: try u(o[3]),
                           s0: try u(s[0]), s1: try u(s[1]), s2: try u(s[2]), s3: try u(s[3]))
    try dispatch("permute", specialization: blockSpecialization, bindings: [x, out], push: push,
                 groups: try elementGroups(out.count, op: .permute))
  }
}
