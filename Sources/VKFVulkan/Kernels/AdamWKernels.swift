import VKFCore

// The AdamW optimizer step (adam_w.comp).

/// Push constants of adam_w.comp (after the 8 binding offsets). Per-step values (lr, bias
/// corrections, …) live in the hyper buffer so recorded work can be replayed.
struct AdamWPush {
  var n: UInt32
  /// 1 when binding 2 holds Σg² from `sumOfSquares` (clipping possible), 0 when it is a
  /// stand-in (hyper bound again).
  var hasSumSq: UInt32
}

extension VulkanBackend {
  /// adam_w.comp: one torch.optim.AdamW step on param, m, v with optional global-norm clip.
  /// Unlike the CPU backend, a maxGradNorm > 0 without gradSumOfSquares does not throw (the
  /// hyper buffer lives on the device): the step runs unclipped.
  public func adamW(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, hyper: Tensor,
                    gradSumOfSquares: Tensor?) throws {
    let op = Op.adamW
    try checkOwnership(op, param, grad, m, v, hyper, gradSumOfSquares)
    try ShapeCheck.adamW(param, grad, m, v, hyper, gradSumOfSquares)
    guard param.count > 0 else { return }
    let push = AdamWPush(n: try shaderUInt(param.count, op),
                         hasSumSq: gradSumOfSquares == nil ? 0 : 1)
    try dispatch("adam_w", specialization: blockSpecialization,
                 bindings: [grad, hyper, gradSumOfSquares ?? hyper, param, m, v], push: push,
                 groups: try elementGroups(param.count, op: op))
  }
}
