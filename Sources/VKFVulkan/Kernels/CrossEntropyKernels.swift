import VKFCore

// Fused softmax cross-entropy (cross_entropy.comp: a count pass, then one workgroup per row).

/// Push constants of cross_entropy.comp, both passes (after the 8 binding offsets).
struct CrossEntropyPush {
  /// Rows (tokens).
  var n: UInt32
  var vocab: UInt32
  var ignoreIndex: Int32
  /// The caller's normalizer; unused when `normFromBuffer` is 1.
  var normalizer: Float
  /// 1: read the normalizer from binding 2 (the count pass's output).
  var normFromBuffer: UInt32
  /// Logit soft-capping (softcap·tanh(x / softcap)), 0 = none.
  var softcap: Float = 0
}

/// The `PASS` define of cross_entropy.comp.
enum CrossEntropyPass: Int {
  /// Count targets ≠ ignoreIndex into one f32.
  case count = 0
  /// Loss (and gradient) per row.
  case loss = 1
}

extension VulkanBackend {
  /// cross_entropy.comp: losses = −log softmax(logits)[target] / N, dLogits = (p − onehot) / N.
  /// A target outside [0, vocab) other than ignoreIndex gives a NaN loss and dLogits row
  /// (the CPU backend throws; checking here would need a download).
  public func crossEntropy(logits: Tensor, targets: Tensor, ignoreIndex: Int32,
                           normalizer: LossNormalizer, softcap: Float, losses: Tensor, dLogits: Tensor?) throws {
    let op = Op.crossEntropy
    var normTensor: Tensor?
    if case .tensor(let t) = normalizer { normTensor = t }
    try checkOwnership(op, logits, targets, losses, dLogits, normTensor)
    // logits, dLogits: (N, V); targets: (N) i32; losses: (N)
    let (n, vocab) = try ShapeCheck.crossEntropy(logits, targets, losses, dLogits, normalizer: normalizer)
    try ShapeCheck.softcap(op, softcap)
    guard n > 0 else { return }
    _ = try shaderUInt(logits.count, op)
    var fixed: Float = 0
    if case .value(let v) = normalizer { fixed = v }
    let push = CrossEntropyPush(n: try shaderUInt(n, op), vocab: try shaderUInt(vocab, op),
                                ignoreIndex: ignoreIndex, normalizer: fixed,
                                normFromBuffer: fixed == 0 ? 1 : 0, softcap: softcap)
    // Binding 2 is only read when normFromBuffer = 1; otherwise any f32 buffer fills it.
    var normBuffer = try (normTensor ?? logits).view(shape: [1])
    if case .targetCount = normalizer {
      normBuffer = try scratch(count: 1)
      try dispatch("cross_entropy", defines: reductionVariant(["PASS": String(CrossEntropyPass.count.rawValue)]),
                   specialization: blockSpecialization, bindings: [targets, normBuffer],
                   push: push, groups: (1, 1, 1))
    }
    // Logits past the binding limit (the LM head's) are processed in row chunks; the count
    // pass above already covered every target.
    for r in try rowChunks(rows: n, rowBytes: vocab * 4, op: op) {
      var chunkPush = push
      chunkPush.n = UInt32(r.count)
      var bindings = [try logits.rowSlice(r, rowLength: vocab), try targets.rowSlice(r, rowLength: 1),
                      normBuffer, try losses.rowSlice(r, rowLength: 1)]
      if let dLogits { bindings.append(try dLogits.rowSlice(r, rowLength: vocab)) }
      try dispatch("cross_entropy",
                   defines: reductionVariant(["PASS": String(CrossEntropyPass.loss.rawValue),
                             "HAS_DLOGITS": dLogits == nil ? "0" : "1"]),
                   specialization: blockSpecialization, bindings: bindings, push: chunkPush,
                   groups: try spreadGroups(r.count, op: op))
    }
  }
}
