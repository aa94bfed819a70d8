#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import VKFCore

// MARK: - SwiGLU (Llama MLP: down(silu(gate) ⊙ up))

extension CPUBackend {
  public func gatedActivation(_ kind: GatedActivation, gate: Tensor, up: Tensor, into out: Tensor) throws {
    try validate(.swiglu, gate, up, out)
    try ShapeCheck.swiglu(gate, up, out)
    let g = UncheckedSendable(UnsafePointer(f32(gate))), u = UncheckedSendable(UnsafePointer(f32(up)))
    let o = UncheckedSendable(f32(out))
    if kind == .geluTanh {
      CPUParallel.forRanges(out.count, cost: 8) { r in
        let g = g.value, u = u.value, o = o.value
        for i in r { o[i] = GeluTanh.value(g[i]) * u[i] }
      }
      return
    }
    CPUParallel.forRanges(out.count, cost: 4) { r in
      let g = g.value, u = u.value, o = o.value
      for i in r { o[i] = g[i] * CPUMath.sigmoid(g[i]) * u[i] }
    }
  }

  /// SwiGLU: dGate = dOut·up·σ(g)·(1 + g·(1 − σ(g))); dUp = dOut·silu(g).
  /// GeGLU: dGate = dOut·up·gelu'(g); dUp = dOut·gelu(g).
  public func gatedActivationBackward(_ kind: GatedActivation, _ dOut: Tensor, gate: Tensor, up: Tensor,
                                      dGate: Tensor, dUp: Tensor) throws {
    try validate(.swigluBackward, dOut, gate, up, dGate, dUp)
    try ShapeCheck.swigluBackward(dOut, gate, up, dGate, dUp)
    let dy = UncheckedSendable(UnsafePointer(f32(dOut))), g = UncheckedSendable(UnsafePointer(f32(gate)))
    let u = UncheckedSendable(UnsafePointer(f32(up)))
    let dg = UncheckedSendable(f32(dGate)), du = UncheckedSendable(f32(dUp))
    let gelu = kind == .geluTanh
    CPUParallel.forRanges(dOut.count, cost: gelu ? 10 : 6) { r in
      let dy = dy.value, g = g.value, u = u.value, dg = dg.value, du = du.value
      for i in r {
        // All inputs are read before either output is written: outputs may alias inputs.
        let gi = g[i], ui = u[i], d = dy[i]
        if gelu {
          dg[i] = d * ui * GeluTanh.derivative(gi)
          du[i] = d * GeluTanh.value(gi)
        } else {
          let s = CPUMath.sigmoid(gi)
          dg[i] = d * ui * s * (1 + gi * (1 - s))
          du[i] = d * gi * s
        }
      }
    }
  }
}

/// tanh-approximated GELU (PyTorch's gelu(approximate="tanh"), Gemma's gelu_pytorch_tanh)
/// and its derivative, in f32 like the shader (geglu in swiglu.comp, ACT = 1).
enum GeluTanh {
  static let c: Float = 0.7978845608028654  // √(2/π)
  static let k: Float = 0.044715

  static func value(_ x: Float) -> Float {
    let t = tanhf(c * (x + k * x * x * x))
    return 0.5 * x * (1 + t)
  }

  /// ½(1 + t) + ½·x·(1 − t²)·√(2/π)·(1 + 3k·x²), t = tanh(√(2/π)(x + k·x³)).
  static func derivative(_ x: Float) -> Float {
    let t = tanhf(c * (x + k * x * x * x))
    let slope: Float = 1 + 3 * k * x * x
    return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * slope
  }
}

/// σ(x) = 1 / (1 + e^−x) in f32, evaluated without overflow (e^−|x| only), as the shader.
enum Sigmoid {
  static func value(_ x: Float) -> Float {
    let e = expf(-abs(x))
    return x >= 0 ? 1 / (1 + e) : e / (1 + e)
  }
}

// MARK: - Token embedding
// Legend: N ids, V vocabulary, C channels.

extension CPUBackend {
  /// Throws `outOfRange` naming the first id outside [0, V).
  private func checkIDs(_ op: Op, _ ids: UnsafePointer<Int32>, _ n: Int, vocab V: Int) throws {
    for i in 0..<n where ids[i] < 0 || Int(ids[i]) >= V {
      throw VKFError.outOfRange(op: op.rawValue,
        detail: "id \(ids[i]) at position \(i) is outside the vocabulary [0, \(V)); "
          + "check the tokenizer matches the model")
    }
  }

  public func embedding(ids: Tensor, table: Tensor, into out: Tensor) throws {
    try validate(.embedding, ids, table, out)
    try ShapeCheck.embedding(.embedding, ids, table, out)
    let N = ids.count, V = table.shape[0], C = table.shape[1]
    let pid = UncheckedSendable(UnsafePointer(i32(ids)))
    try checkIDs(.embedding, pid.value, N, vocab: V)
    let o = UncheckedSendable(f32(out))
    if table.dtype != .f32 {
      // A frozen 16-bit table: each looked-up row widened to f32.
      let t = UncheckedSendable(UnsafePointer(u16(table))), bf16 = table.dtype == .bf16
      CPUParallel.forRanges(N, cost: C) { r in
        for i in r {
          let src = t.value + Int(pid.value[i]) * C, dst = o.value + i * C
          if bf16 {
            for j in 0..<C { dst[j] = BFloat16.toFloat(src[j]) }
          } else {
            for j in 0..<C { dst[j] = Float(Float16(bitPattern: src[j])) }
          }
        }
      }
      return
    }
    let t = UncheckedSendable(UnsafePointer(f32(table)))
    CPUParallel.forRanges(N, cost: C) { r in
      for i in r { (o.value + i * C).update(from: t.value + Int(pid.value[i]) * C, count: C) }
    }
  }

  /// dTable[ids[i]] += dOut[i], ids in order; columns are split over the cores, so a
  /// repeated id is still summed in the same order every time.
  public func embeddingBackward(ids: Tensor, dOut: Tensor, dTable: Tensor) throws {
    try validate(.embeddingBackward, ids, dOut, dTable)
    try ShapeCheck.embedding(.embeddingBackward, ids, dTable, dOut)
    let N = ids.count, V = dTable.shape[0], C = dTable.shape[1]
    let pid = UncheckedSendable(UnsafePointer(i32(ids)))
    try checkIDs(.embeddingBackward, pid.value, N, vocab: V)
    let dy = UncheckedSendable(UnsafePointer(f32(dOut))), dt = UncheckedSendable(f32(dTable))
    CPUParallel.forRanges(C, cost: N) { cols in
      for i in 0..<N {
        let src = dy.value + i * C, dst = dt.value + Int(pid.value[i]) * C
        for j in cols { dst[j] += src[j] }
      }
    }
  }
}

// MARK: - Fused cross-entropy
// Legend: N rows (tokens), V vocabulary.

extension CPUBackend {
  public func crossEntropy(logits: Tensor, targets: Tensor, ignoreIndex: Int32,
                           normalizer normalizerKind: LossNormalizer, softcap: Float, losses: Tensor,
                           dLogits: Tensor?) throws {
    var normTensor: Tensor?
    if case .tensor(let t) = normalizerKind { normTensor = t }
    try validate(.crossEntropy, logits, targets, losses, dLogits, normTensor)
    let (N, V) = try ShapeCheck.crossEntropy(logits, targets, losses, dLogits, normalizer: normalizerKind)
    try ShapeCheck.softcap(.crossEntropy, softcap)
    let normalizer: Float?
    switch normalizerKind {
    case .targetCount: normalizer = nil
    case .value(let v): normalizer = v
    case .tensor(let t): normalizer = f32(t)[0]
    }
    let pt = UncheckedSendable(UnsafePointer(i32(targets)))
    var counted = 0
    for i in 0..<N {
      let t = pt.value[i]
      if t == ignoreIndex { continue }
      guard t >= 0, Int(t) < V else {
        throw VKFError.outOfRange(op: "crossEntropy",
          detail: "target \(t) at row \(i) is outside [0, \(V)) and is not ignoreIndex \(ignoreIndex)")
      }
      counted += 1
    }
    let pl = UncheckedSendable(f32(losses))
    let pd = UncheckedSendable(dLogits.map { f32($0) })
    // No counted targets and no explicit normalizer: the mean over nothing is defined as 0.
    guard normalizer != nil || counted > 0, V > 0 else {
      pl.value.update(repeating: 0, count: N)
      pd.value?.update(repeating: 0, count: N * V)
      return
    }
    let invNorm = 1 / Double(normalizer ?? Float(counted))
    let px = UncheckedSendable(UnsafePointer(f32(logits)))
    CPUParallel.forRanges(N, cost: 3 * V) { rows in
      // With a cap, one scratch row per range holds the capped logits (dLogits may alias x).
      withUnsafeTemporaryAllocation(of: Float.self, capacity: softcap > 0 ? V : 0) { buf in
        for r in rows {
          let t = pt.value[r], x = px.value + r * V
          let d = pd.value.map { $0 + r * V }
          if t == ignoreIndex {
            pl.value[r] = 0
            d?.update(repeating: 0, count: V)
            continue
          }
          guard softcap > 0, let y = buf.baseAddress else {
            pl.value[r] = Self.rowCrossEntropy(x, V, target: Int(t), invNorm: invNorm, d: d)
            continue
          }
          for j in 0..<V { y[j] = CPUMath.softcap(x[j], softcap) }
          pl.value[r] = Self.rowCrossEntropy(UnsafePointer(y), V, target: Int(t), invNorm: invNorm, d: d)
          // The chain rule through the cap.
          if let d { for j in 0..<V { let c = y[j] / softcap; d[j] *= 1 - c * c } }
        }
      }
    }
  }

  /// One row's −log softmax(x)[target] · invNorm; with `d`, also (softmax − onehot) · invNorm
  /// into it (d may alias x: every read of x comes first).
  private static func rowCrossEntropy(_ x: UnsafePointer<Float>, _ V: Int, target t: Int, invNorm: Double,
                                      d: UnsafeMutablePointer<Float>?) -> Float {
    let m = CPUMath.max(x, V)
    let target = x[t]
    let sum: Double
    if let d {
      for j in 0..<V { d[j] = CPUMath.exp(x[j] - m) }
      sum = CPUMath.sum(d, V)
      let k = Float(invNorm / sum)
      for j in 0..<V { d[j] *= k }
      d[t] -= Float(invNorm)
    } else {
      sum = CPUBackend.sumOfExp(x, V, minus: m)
    }
    // −log softmax[t] = log Σ e^(x−m) + m − x[t]; sum ≥ 1 (the max term is e⁰).
    return Float((log(sum) + Double(m) - Double(target)) * invNorm)
  }

  /// Σ e^(x[j] − m) without a destination buffer.
  static func sumOfExp(_ x: UnsafePointer<Float>, _ n: Int, minus m: Float) -> Double {
    var total = 0.0
    withUnsafeTemporaryAllocation(of: Float.self, capacity: 1024) { buf in
      let b = buf.baseAddress.unsafelyUnwrapped
      var j = 0
      while j < n {
        let c = min(1024, n - j), xs = x + j
        for i in 0..<c { b[i] = CPUMath.exp(xs[i] - m) }
        total += CPUMath.sum(b, c)
        j += c
      }
    }
    return total
  }
}

// MARK: - Ungated activations (BERT's exact GELU)

extension CPUBackend {
  public func activation(_ kind: Activation, _ x: Tensor, into out: Tensor) throws {
    try validate(.activation, x, out)
    try ShapeCheck.activation(.activation, x, out)
    let px = UncheckedSendable(UnsafePointer(f32(x))), po = UncheckedSendable(f32(out))
    CPUParallel.forRanges(x.count, cost: 8) { r in
      let x = px.value, o = po.value
      switch kind {
      case .gelu: for i in r { o[i] = GeluErf.value(x[i]) }
      case .geluTanh: for i in r { o[i] = GeluTanh.value(x[i]) }
      case .sigmoid: for i in r { o[i] = Sigmoid.value(x[i]) }
      }
    }
  }

  public func activationBackward(_ kind: Activation, _ dOut: Tensor, x: Tensor, into dx: Tensor) throws {
    try validate(.activationBackward, dOut, x, dx)
    try ShapeCheck.activation(.activationBackward, dOut, x, dx)
    let pdy = UncheckedSendable(UnsafePointer(f32(dOut))), px = UncheckedSendable(UnsafePointer(f32(x)))
    let pdx = UncheckedSendable(f32(dx))
    CPUParallel.forRanges(x.count, cost: 10) { r in
      let dy = pdy.value, x = px.value, d = pdx.value
      switch kind {
      case .gelu: for i in r { d[i] = dy[i] * GeluErf.derivative(x[i]) }
      case .geluTanh: for i in r { d[i] = dy[i] * GeluTanh.derivative(x[i]) }
      case .sigmoid: for i in r { let s = Sigmoid.value(x[i]); d[i] = dy[i] * s * (1 - s) }
      }
    }
  }
}

/// torch's exact GELU, x·Φ(x), with libm's erf.
enum GeluErf {
  static func value(_ x: Float) -> Float { 0.5 * x * (1 + erff(x * 0.70710678118654752)) }

  /// Φ(x) + x·φ(x), φ(x) = e^{−x²/2}/√(2π).
  static func derivative(_ x: Float) -> Float {
    0.5 * (1 + erff(x * 0.70710678118654752)) + x * expf(-0.5 * x * x) * 0.39894228040143268
  }
}
