/// `VKF_CHECK_RESULTS=1`: a backend that runs every op on `primary` and replays it on
/// `reference` (the CPU) with copies of the same inputs, then throws `resultMismatch` at the
/// first op whose outputs diverge, naming the op and the shapes. Slow (every op downloads
/// its operands); meant for hunting a kernel bug, not for training.
public final class CheckingBackend: Backend {
  /// The backend whose tensors the caller holds.
  public let primary: Backend
  /// The ground truth each op is replayed on.
  public let reference: Backend
  /// Ops checked so far (for a summary line).
  public private(set) var checkedOps = 0

  /// f32 kernels that sum in another order differ by NMSE ~1e-12…1e-9; a wrong index or a
  /// missed term gives ≥ 1e-4. 1e-7 separates the two with margin on both sides.
  public static let defaultMaxNMSE = 1e-7
  /// Guards single elements: 1e-3 relative to the output's largest magnitude (f32 rounding of
  /// long sums stays far below; a wrong element is O(1) relative).
  public static let defaultMaxAbsRelative = 1e-3
  /// The limits in force (the defaults unless a test tightens them).
  public let maxNMSE: Double, maxAbsRelative: Double

  public init(primary: Backend, reference: Backend, maxNMSE: Double = defaultMaxNMSE,
              maxAbsRelative: Double = defaultMaxAbsRelative) {
    self.primary = primary
    self.reference = reference
    self.maxNMSE = maxNMSE
    self.maxAbsRelative = maxAbsRelative
  }

  public var name: String { "\(primary.name) checked against \(reference.name)" }
  public func supports(_ op: Op, _ dtype: DType) -> Bool {
    primary.supports(op, dtype) && reference.supports(op, dtype)
  }

  // MARK: - Memory (no replay needed)
  public func allocate(_ shape: [Int], _ dtype: DType, memory: MemoryKind) throws -> Tensor {
    try primary.allocate(shape, dtype, memory: memory)
  }
  public func upload(_ bytes: UnsafeRawBufferPointer, to t: Tensor) throws { try primary.upload(bytes, to: t) }
  public func download(_ t: Tensor, into bytes: UnsafeMutableRawBufferPointer) throws {
    try primary.download(t, into: bytes)
  }
  public func synchronize() throws { try primary.synchronize() }
  public func flush() throws { try primary.flush() }

  // MARK: - Recorded work: every op is checked as it runs, so a replay runs the body again.
  public func record(_ body: @escaping () throws -> Void) throws -> Recording {
    ClosureRecording(owner: ObjectIdentifier(self), body: body)
  }
  public func replay(_ recordings: [Recording]) throws {
    for r in recordings {
      guard let c = r as? ClosureRecording, c.owner == ObjectIdentifier(self) else {
        throw VKFError.wrongBackend(op: "replay", detail: "a recording made by another backend")
      }
      try c.body()
    }
  }
  public var statistics: ExecutionStatistics { primary.statistics }
  public var memoryCapacity: Int? { primary.memoryCapacity }
  public var recordingSavesWork: Bool { primary.recordingSavesWork }
  public func resetMemoryPeak() { primary.resetMemoryPeak() }

  // MARK: - Replay machinery

  /// Copies each tensor to the reference backend, runs `body` on both, compares `outputs`.
  func check(_ op: Op, inputs: [Tensor?], outputs: [Tensor?],
                     _ body: (Backend, (Tensor) -> Tensor) throws -> Void) throws {
    var mirrors: [(Tensor, Tensor)] = []
    for case let t? in inputs + outputs where !mirrors.contains(where: { same($0.0, t) }) {
      let bytes = try primary.download(t, as: UInt8.self)
      let m = try reference.allocate(t.shape, t.dtype, memory: .device)
      try reference.upload(bytes, to: m)
      mirrors.append((t, m))
    }
    let map: (Tensor) -> Tensor = { t in mirrors.first(where: { self.same($0.0, t) })?.1 ?? t }
    try body(reference, map)
    try body(primary, { $0 })
    for case let t? in outputs {
      let expected = try Self.values(reference, map(t)), actual = try Self.values(primary, t)
      let scale = expected.reduce(Float(1)) { max($0, abs($1)) }
      if let why = Metrics.mismatch(expected, actual, nmse: maxNMSE,
                                    maxAbs: maxAbsRelative * Double(scale)) {
        let shapes = inputs.compactMap { $0.map { "\($0.shape)" } }.joined(separator: ", ")
        throw VKFError.resultMismatch(op: op.rawValue,
          detail: "output \(t.shape) from inputs [\(shapes)]: \(why)")
      }
    }
    checkedOps += 1
  }

  /// A tensor's elements as Float: floats converted, i32 (indices: expert ids, rows) exactly.
  private static func values(_ b: Backend, _ t: Tensor) throws -> [Float] {
    t.dtype == .i32 ? try b.download(t, as: Int32.self).map(Float.init) : try b.floats(t)
  }

  private func same(_ a: Tensor, _ b: Tensor) -> Bool {
    a.storage === b.storage && a.byteOffset == b.byteOffset && a.shape == b.shape && a.dtype == b.dtype
  }

  private func mapNF4(_ w: NF4Weight, _ f: (Tensor) -> Tensor) -> NF4Weight {
    w.mapped(f)
  }

  private func tensors(of w: LinearWeight) -> [Tensor] {
    switch w { case .dense(let t): return [t]; case .nf4(let q): return q.tensors; case .int8(let q): return q.tensors }
  }

  private func mapLinear(_ w: LinearWeight, _ f: (Tensor) -> Tensor) -> LinearWeight {
    switch w {
    case .dense(let t): return .dense(f(t))
    case .nf4(let q): return .nf4(mapNF4(q, f))
    case .int8(let q): return .int8(q.mapped(f))
    }
  }

  // MARK: - Ops
  public func fill(_ t: Tensor, value: Float) throws {
    try check(.fill, inputs: [], outputs: [t]) { b, m in try b.fill(m(t), value: value) }
  }
  public func copy(_ src: Tensor, to dst: Tensor) throws {
    try check(.copy, inputs: [src], outputs: [dst]) { b, m in try b.copy(m(src), to: m(dst)) }
  }
  public func cast(_ src: Tensor, to dst: Tensor) throws {
    try check(.cast, inputs: [src], outputs: [dst]) { b, m in try b.cast(m(src), to: m(dst)) }
  }
  public func permute(_ x: Tensor, dims: [Int], into out: Tensor) throws {
    try check(.permute, inputs: [x], outputs: [out]) { b, m in try b.permute(m(x), dims: dims, into: m(out)) }
  }
  public func matmul(_ a: Tensor, _ bt: Tensor, into c: Tensor, transposeA: Bool, transposeB: Bool,
                     alpha: Float, beta: Float) throws {
    try check(.matmul, inputs: [a, bt], outputs: [c]) { b, m in
      try b.matmul(m(a), m(bt), into: m(c), transposeA: transposeA, transposeB: transposeB,
                   alpha: alpha, beta: beta)
    }
  }
  public func dequantizeNF4(_ w: NF4Weight, into out: Tensor) throws {
    try check(.dequantizeNF4, inputs: w.tensors, outputs: [out]) { b, m in
      try b.dequantizeNF4(mapNF4(w, m), into: m(out))
    }
  }
  public func matmulNF4(_ x: Tensor, _ w: NF4Weight, into y: Tensor, transposeB: Bool,
                        alpha: Float, beta: Float) throws {
    try check(.matmulNF4, inputs: [x] + w.tensors, outputs: [y]) { b, m in
      try b.matmulNF4(m(x), mapNF4(w, m), into: m(y), transposeB: transposeB, alpha: alpha, beta: beta)
    }
  }
  public func fakeQuantize(_ w: Tensor, kind: FakeQuant, into out: Tensor) throws {
    try check(.fakeQuantize, inputs: [w], outputs: [out]) { b, m in try b.fakeQuantize(m(w), kind: kind, into: m(out)) }
  }
  public func dequantizeInt8(_ w: Int8Weight, into out: Tensor) throws {
    try check(.dequantizeInt8, inputs: w.tensors, outputs: [out]) { b, m in try b.dequantizeInt8(w.mapped(m), into: m(out)) }
  }
  public func matmulInt8(_ x: Tensor, _ w: Int8Weight, into y: Tensor, transposeB: Bool,
                         alpha: Float, beta: Float) throws {
    try check(.matmulInt8, inputs: [x] + w.tensors, outputs: [y]) { b, m in
      try b.matmulInt8(m(x), w.mapped(m), into: m(y), transposeB: transposeB, alpha: alpha, beta: beta)
    }
  }
  public func loraForward(_ x: Tensor, loraX: Tensor?, base: LinearWeight, a: Tensor, b bm: Tensor,
                          scale: Float, into y: Tensor, xa: Tensor) throws {
    try check(.loraForward, inputs: [x, loraX, a, bm] + tensors(of: base), outputs: [y, xa]) { b, m in
      try b.loraForward(m(x), loraX: loraX.map(m), base: mapLinear(base, m), a: m(a), b: m(bm),
                        scale: scale, into: m(y), xa: m(xa))
    }
  }
  public func rmsNorm(_ x: Tensor, weight: Tensor, weightOffset: Float, eps: Float, into out: Tensor,
                      rstd: Tensor) throws {
    try check(.rmsNorm, inputs: [x, weight], outputs: [out, rstd]) { b, m in
      try b.rmsNorm(m(x), weight: m(weight), weightOffset: weightOffset, eps: eps, into: m(out), rstd: m(rstd))
    }
  }
  public func rmsNormBackward(_ dOut: Tensor, x: Tensor, weight: Tensor, weightOffset: Float, rstd: Tensor,
                              dx: Tensor, dWeight: Tensor?) throws {
    try check(.rmsNormBackward, inputs: [dOut, x, weight, rstd], outputs: [dx, dWeight]) { b, m in
      try b.rmsNormBackward(m(dOut), x: m(x), weight: m(weight), weightOffset: weightOffset, rstd: m(rstd), dx: m(dx),
                            dWeight: dWeight.map(m))
    }
  }
  public func activation(_ kind: Activation, _ x: Tensor, into out: Tensor) throws {
    try check(.activation, inputs: [x], outputs: [out]) { b, m in try b.activation(kind, m(x), into: m(out)) }
  }
  public func activationBackward(_ kind: Activation, _ dOut: Tensor, x: Tensor, into dx: Tensor) throws {
    try check(.activationBackward, inputs: [dOut, x], outputs: [dx]) { b, m in
      try b.activationBackward(kind, m(dOut), x: m(x), into: m(dx))
    }
  }
  public func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor, eps: Float, into out: Tensor, mean: Tensor,
                        rstd: Tensor) throws {
    try check(.layerNorm, inputs: [x, weight, bias], outputs: [out, mean, rstd]) { b, m in
      try b.layerNorm(m(x), weight: m(weight), bias: m(bias), eps: eps, into: m(out), mean: m(mean), rstd: m(rstd))
    }
  }
  public func layerNormBackward(_ dOut: Tensor, x: Tensor, weight: Tensor, mean: Tensor, rstd: Tensor, dx: Tensor,
                                dWeight: Tensor?, dBias: Tensor?) throws {
    try check(.layerNormBackward, inputs: [dOut, x, weight, mean, rstd], outputs: [dx, dWeight, dBias]) { b, m in
      try b.layerNormBackward(m(dOut), x: m(x), weight: m(weight), mean: m(mean), rstd: m(rstd), dx: m(dx),
                              dWeight: dWeight.map(m), dBias: dBias.map(m))
    }
  }
  public func rope(_ x: Tensor, positions: Tensor, invFreq: Tensor, into out: Tensor) throws {
    try check(.rope, inputs: [x, positions, invFreq], outputs: [out]) { b, m in
      try b.rope(m(x), positions: m(positions), invFreq: m(invFreq), into: m(out))
    }
  }
  public func ropeBackward(_ dOut: Tensor, positions: Tensor, invFreq: Tensor, into dx: Tensor) throws {
    try check(.ropeBackward, inputs: [dOut, positions, invFreq], outputs: [dx]) { b, m in
      try b.ropeBackward(m(dOut), positions: m(positions), invFreq: m(invFreq), into: m(dx))
    }
  }
  public func causalSoftmax(_ x: Tensor, scale: Float, window: Int, keyStarts: Tensor?, into out: Tensor) throws {
    try check(.causalSoftmax, inputs: [x, keyStarts], outputs: [out]) { b, m in
      try b.causalSoftmax(m(x), scale: scale, window: window, keyStarts: keyStarts.map(m), into: m(out))
    }
  }
  public func causalSoftmaxBackward(_ dOut: Tensor, out y: Tensor, scale: Float, into dx: Tensor) throws {
    try check(.causalSoftmaxBackward, inputs: [dOut, y], outputs: [dx]) { b, m in
      try b.causalSoftmaxBackward(m(dOut), out: m(y), scale: scale, into: m(dx))
    }
  }
  public func attention(q: Tensor, k: Tensor, v: Tensor, scale: Float, mask: AttentionMask,
                        into out: Tensor, lse: Tensor) throws {
    try check(.attention, inputs: [q, k, v, mask.keyLengths], outputs: [out, lse]) { b, m in
      var inner = mask
      inner.keyLengths = mask.keyLengths.map(m)
      try b.attention(q: m(q), k: m(k), v: m(v), scale: scale, mask: inner, into: m(out), lse: m(lse))
    }
  }
  public func attentionBackward(_ dOut: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                                scale: Float, mask: AttentionMask, delta: Tensor, dq: Tensor, dk: Tensor,
                                dv: Tensor) throws {
    try check(.attentionBackward, inputs: [dOut, q, k, v, out, lse, mask.keyLengths], outputs: [delta, dq, dk, dv]) { b, m in
      var inner = mask
      inner.keyLengths = mask.keyLengths.map(m)
      try b.attentionBackward(m(dOut), q: m(q), k: m(k), v: m(v), out: m(out), lse: m(lse), scale: scale,
                              mask: inner, delta: m(delta), dq: m(dq), dk: m(dk), dv: m(dv))
    }
  }
  public func gatedActivation(_ kind: GatedActivation, gate: Tensor, up: Tensor, into out: Tensor) throws {
    try check(.swiglu, inputs: [gate, up], outputs: [out]) { b, m in
      try b.gatedActivation(kind, gate: m(gate), up: m(up), into: m(out))
    }
  }
  public func gatedActivationBackward(_ kind: GatedActivation, _ dOut: Tensor, gate: Tensor, up: Tensor,
                                      dGate: Tensor, dUp: Tensor) throws {
    try check(.swigluBackward, inputs: [dOut, gate, up], outputs: [dGate, dUp]) { b, m in
      try b.gatedActivationBackward(kind, m(dOut), gate: m(gate), up: m(up), dGate: m(dGate), dUp: m(dUp))
    }
  }
  public func embedding(ids: Tensor, table: Tensor, into out: Tensor) throws {
    try check(.embedding, inputs: [ids, table], outputs: [out]) { b, m in
      try b.embedding(ids: m(ids), table: m(table), into: m(out))
    }
  }
  public func embeddingBackward(ids: Tensor, dOut: Tensor, dTable: Tensor) throws {
    try check(.embeddingBackward, inputs: [ids, dOut], outputs: [dTable]) { b, m in
      try b.embeddingBackward(ids: m(ids), dOut: m(dOut), dTable: m(dTable))
    }
  }
  public func crossEntropy(logits: Tensor, targets: Tensor, ignoreIndex: Int32, normalizer: LossNormalizer,
                           softcap: Float, losses: Tensor, dLogits: Tensor?) throws {
    var normTensor: Tensor?
    if case .tensor(let t) = normalizer { normTensor = t }
    try check(.crossEntropy, inputs: [logits, targets, normTensor], outputs: [losses, dLogits]) { b, m in
      try b.crossEntropy(logits: m(logits), targets: m(targets), ignoreIndex: ignoreIndex,
                         normalizer: normTensor.map { .tensor(m($0)) } ?? normalizer, softcap: softcap,
                         losses: m(losses), dLogits: dLogits.map(m))
    }
  }
  public func preferenceLoss(policy: Tensor, reference: Tensor, answerTokens: Tensor, pairsInStep: Tensor,
                             parameters: PreferenceLossParameters, tokenWeights: Tensor, lossSum: Tensor,
                             metrics: Tensor) throws {
    try check(.preferenceLoss, inputs: [policy, reference, answerTokens, pairsInStep],
              outputs: [tokenWeights, lossSum, metrics]) { b, m in
      try b.preferenceLoss(policy: m(policy), reference: m(reference), answerTokens: m(answerTokens),
                           pairsInStep: m(pairsInStep), parameters: parameters, tokenWeights: m(tokenWeights),
                           lossSum: m(lossSum), metrics: m(metrics))
    }
  }
  public func add(_ a: Tensor, _ bt: Tensor, alpha: Float, into out: Tensor) throws {
    try check(.add, inputs: [a, bt], outputs: [out]) { b, m in try b.add(m(a), m(bt), alpha: alpha, into: m(out)) }
  }
  public func mul(_ a: Tensor, _ bt: Tensor, into out: Tensor) throws {
    try check(.mul, inputs: [a, bt], outputs: [out]) { b, m in try b.mul(m(a), m(bt), into: m(out)) }
  }
  public func scale(_ x: Tensor, by alpha: Float, softcap: Float, into out: Tensor) throws {
    try check(.scale, inputs: [x], outputs: [out]) { b, m in
      try b.scale(m(x), by: alpha, softcap: softcap, into: m(out))
    }
  }
  public func scaleRows(_ x: Tensor, weights: Tensor, into out: Tensor) throws {
    try check(.scaleRows, inputs: [x, weights], outputs: [out]) { b, m in
      try b.scaleRows(m(x), weights: m(weights), into: m(out))
    }
  }
  public func dropoutMask(seed: Tensor, stream: UInt32, p: Float, into mask: Tensor) throws {
    try check(.dropoutMask, inputs: [seed], outputs: [mask]) { b, m in
      try b.dropoutMask(seed: m(seed), stream: stream, p: p, into: m(mask))
    }
  }
  public func sampleTokens(logits: Tensor, presence: Tensor?, parameters: SamplingParameters, into ids: Tensor,
                           entropy: Tensor?) throws {
    try check(.sampleTokens, inputs: [logits], outputs: [ids, presence, entropy]) { b, m in
      try b.sampleTokens(logits: m(logits), presence: presence.map(m), parameters: parameters, into: m(ids),
                         entropy: entropy.map(m))
    }
  }
  public func sumOfSquares(_ x: Tensor, into out: Tensor) throws {
    try check(.sumOfSquares, inputs: [x], outputs: [out]) { b, m in try b.sumOfSquares(m(x), into: m(out)) }
  }
  public func adamW(param: Tensor, grad: Tensor, m mt: Tensor, v: Tensor, hyper: Tensor,
                    gradSumOfSquares: Tensor?) throws {
    try check(.adamW, inputs: [grad, hyper, gradSumOfSquares], outputs: [param, mt, v]) { b, m in
      try b.adamW(param: m(param), grad: m(grad), m: m(mt), v: m(v), hyper: m(hyper),
                  gradSumOfSquares: gradSumOfSquares.map(m))
    }
  }
}
