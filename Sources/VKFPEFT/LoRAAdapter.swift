import VKFCore
import VKFModel

/// LoRA (and DoRA) on one projection, attached through `Linear.adapter`; the frozen base is
/// dense f32 or NF4 (QLoRA) and stays in the `Linear`.
///
/// LoRA: y = W x + b + s·B(A(x_d)), x_d = dropout(x).
/// DoRA (peft `DoraLinearLayer`, norm detached as in DoRA §4.3), with m̂ = m / ‖W + s·B·A‖_row:
///   y = W x + b + (m̂ − 1)⊙(W x_d) + m̂⊙s·B(A(x_d)), which is m̂⊙(W x + s·B A x) + b without dropout.
/// Legend: N rows of x, in/out features, r rank.
public final class LoRAAdapter: LinearAdapter {
  /// A (r, in), kaiming-uniform at creation.
  public let a: Tensor
  /// B (out, r), zero at creation.
  public let b: Tensor
  /// dL/dA (r, in), accumulated.
  public let aGrad: Tensor
  /// dL/dB (out, r), accumulated.
  public let bGrad: Tensor
  /// DoRA's magnitude m (out), or nil for plain LoRA.
  public let magnitude: Tensor?
  /// dL/dm (out), accumulated; nil for plain LoRA.
  public let magnitudeGrad: Tensor?
  /// s: alpha/r, or alpha/√r with rsLoRA.
  public let scaling: Float
  /// Dropout probability of the adapter path's input.
  public let dropout: Float
  /// False: the plain base projection, forward and backward (DPO's reference model).
  public var enabled = true

  /// Rank r.
  public var rank: Int { a.shape[0] }
  /// Position among the model's adapters: keys its dropout masks.
  let index: Int
  let workspace: LoRAWorkspace
  /// x_d·Aᵀ (≥ N, r) from the last forward, for the backward; grows only.
  private var xa: Tensor?
  /// Rows N of the last forward (its x_d·Aᵀ is the first N rows of `xa`).
  private var forwardRows = 0
  /// DoRA: 1/‖W + s·B·A‖ per output row, and m ⊙ that (out), from the last forward.
  private let inverseNorm: Tensor?, magnitudeScale: Tensor?
  /// Dropout masks are drawn for (seed, index, step); step advances after each backward, so
  /// a checkpointed recomputation (forward again before the backward) sees the same mask.
  var dropoutStep: UInt64 = 0
  /// True when the last forward applied dropout (the backward must too).
  private var droppedInLastForward = false

  init(a: Tensor, b: Tensor, aGrad: Tensor, bGrad: Tensor, magnitude: Tensor?, magnitudeGrad: Tensor?,
       scaling: Float, dropout: Float, index: Int, workspace: LoRAWorkspace) throws {
    self.a = a; self.b = b; self.aGrad = aGrad; self.bGrad = bGrad
    self.magnitude = magnitude; self.magnitudeGrad = magnitudeGrad
    self.scaling = scaling; self.dropout = dropout; self.index = index; self.workspace = workspace
    if let magnitude {
      inverseNorm = try workspace.backend.allocate([magnitude.count])
      magnitudeScale = try workspace.backend.allocate([magnitude.count])
    } else {
      inverseNorm = nil; magnitudeScale = nil
    }
  }

  /// True for DoRA.
  public var isDoRA: Bool { magnitude != nil }

  // MARK: - Forward

  // x: (N, in) → y: (N, out)
  public func forward(_ be: Backend, linear: Linear, x: Tensor, into y: Tensor) throws {
    guard enabled else { return try linear.baseForward(be, x, into: y) }
    let n = x.rowCount, inF = linear.inFeatures, outF = linear.outFeatures
    let x2 = try x.reshaped([n, inF]), y2 = try y.reshaped([n, outF])
    let xa = try xaBuffer(rows: n)
    forwardRows = n
    let xd = try droppedInput(be, x: x2)
    droppedInLastForward = xd != nil
    if let magnitude, let inverseNorm, let magnitudeScale {
      try computeMagnitudeScale(be, linear: linear, magnitude: magnitude, inverseNorm: inverseNorm,
                                into: magnitudeScale)
      // y = m̂ ⊙ (W x_d + s·(x_d Aᵀ) Bᵀ) [+ W (x − x_d)] + b
      try be.loraForward(xd ?? x2, loraX: nil, base: linear.base, a: a, b: b, scale: scaling,
                         into: y2, xa: xa)
      try be.mul(y2, magnitudeScale, into: y2)
      if let xd {
        let diff = try workspace.scratch(.inputRows, [n, inF])
        try be.add(x2, xd, alpha: -1, into: diff)
        try be.linear(diff, linear.base, into: y2, beta: 1)
      }
    } else {
      try be.loraForward(x2, loraX: xd, base: linear.base, a: a, b: b, scale: scaling, into: y2, xa: xa)
    }
    if let bias = linear.bias { try be.add(y2, bias, alpha: 1, into: y2) }
  }

  /// x ⊙ mask in the workspace, or nil when no dropout applies.
  // x: (N, in) → (N, in)
  private func droppedInput(_ be: Backend, x: Tensor) throws -> Tensor? {
    guard dropout > 0, workspace.training else { return nil }
    let (n, inF) = (x.shape[0], x.shape[1])
    let mask = try workspace.mask(index: index, step: dropoutStep, rows: n, cols: inF, p: dropout)
    let xd = try workspace.scratch(.droppedInput, [n, inF])
    try be.mul(x, mask, into: xd)
    return xd
  }

  /// m̂ = m / ‖W + s·B·A‖ per output row, the norm through RMSNorm's 1/rms with ε = 0:
  /// 1/‖w‖ = rstd / √in. Recomputed each forward since A and B change every step.
  private func computeMagnitudeScale(_ be: Backend, linear: Linear, magnitude: Tensor,
                                     inverseNorm: Tensor, into scale: Tensor) throws {
    let (outF, inF) = (linear.outFeatures, linear.inFeatures)
    let w = try workspace.scratch(.weight, [outF, inF])
    switch linear.base {
    case .dense(let t): try be.cast(t, to: w)  // a 16-bit frozen base is widened
    case .nf4(let q): try be.dequantizeNF4(q, into: w)
    case .int8(let q): try be.dequantizeInt8(q, into: w)
    }
    try be.matmul(b, a, into: w, transposeA: false, transposeB: false, alpha: scaling, beta: 1)
    let normalized = try workspace.scratch(.normalizedWeight, [outF, inF])
    try be.rmsNorm(w, weight: try workspace.ones(inF), eps: 0, into: normalized, rstd: inverseNorm)
    try be.scale(inverseNorm, by: 1 / Float(inF).squareRoot(), into: inverseNorm)
    try be.mul(magnitude, inverseNorm, into: scale)
  }

  /// A (n, r) view of the x_d·Aᵀ buffer, which only grows (a recorded pass keeps the buffer
  /// it saw alive, so shapes met later must not reallocate it needlessly).
  private func xaBuffer(rows n: Int) throws -> Tensor {
    if let xa, xa.count >= n * rank { return try xa.view(shape: [n, rank]) }
    xa = nil
    let t = try workspace.backend.allocate([n, rank])
    xa = t
    return t
  }

  // MARK: - Backward

  // dy: (N, out)  x: (N, in) → dx: (N, in); dA (r, in), dB (out, r), dm (out) accumulate
  public func backward(_ be: Backend, linear: Linear, dy: Tensor, x: Tensor, dx: Tensor?,
                       accumulateInput: Bool, ones: Tensor) throws {
    guard enabled else {
      return try linear.baseBackward(be, dy: dy, x: x, dx: dx, accumulateInput: accumulateInput, ones: ones)
    }
    defer { dropoutStep &+= 1 }
    let n = x.rowCount, inF = linear.inFeatures, outF = linear.outFeatures
    guard let xaAll = xa, forwardRows == n else {
      throw VKFError.other("LoRAAdapter.backward: no forward pass of \(n) rows to differentiate")
    }
    let xa = try xaAll.view(shape: [n, rank])
    let x2 = try x.reshaped([n, inF]), dy2 = try dy.reshaped([n, outF])
    let dx2 = try dx.map { try $0.reshaped([n, inF]) }
    // Same mask as the forward: (seed, index, step) has not changed since.
    let mask = droppedInLastForward
      ? try workspace.mask(index: index, step: dropoutStep, rows: n, cols: inF, p: dropout) : nil
    var xd = x2
    if let mask {
      xd = try workspace.scratch(.droppedInput, [n, inF])
      try be.mul(x2, mask, into: xd)
    }
    if isDoRA {
      try doraBackward(be, linear: linear, dy: dy2, x: x2, xd: xd, mask: mask, xa: xa, dx: dx2,
                       accumulateInput: accumulateInput, ones: ones)
      return
    }
    // dB += s·dyᵀ·xa; dxa = s·dy·B; dA += dxaᵀ·x_d
    let dxa = try workspace.scratch(.rankRows, [n, rank])
    try be.matmul(dy2, xa, into: bGrad, transposeA: true, transposeB: false, alpha: scaling, beta: 1)
    try be.matmul(dy2, b, into: dxa, transposeA: false, transposeB: false, alpha: scaling, beta: 0)
    try be.matmul(dxa, xd, into: aGrad, transposeA: true, transposeB: false, alpha: 1, beta: 1)
    // dx (=/+=) dy·W (+ dW, db when trained) + (dxa·A) ⊙ mask
    try linear.baseBackward(be, dy: dy2, x: x2, dx: dx2, accumulateInput: accumulateInput, ones: ones)
    guard let dx2 else { return }
    try addAdapterInputGradient(be, dxa: dxa, mask: mask, into: dx2)
  }

  /// dx += (dxa·A) ⊙ mask (mask nil: dx += dxa·A).
  private func addAdapterInputGradient(_ be: Backend, dxa: Tensor, mask: Tensor?, into dx: Tensor) throws {
    guard let mask else {
      return try be.matmul(dxa, a, into: dx, transposeA: false, transposeB: false, alpha: 1, beta: 1)
    }
    let t = try workspace.scratch(.inputRows, dx.shape)
    try be.matmul(dxa, a, into: t, transposeA: false, transposeB: false, alpha: 1, beta: 0)
    try be.mul(t, mask, into: t)
    try be.add(dx, t, alpha: 1, into: dx)
  }

  /// DoRA's backward with the norm detached (so no gradient flows through ‖W + s·B·A‖):
  /// with u = W x_d + s·xa·Bᵀ and g = dy ⊙ m̂:
  ///   dm += (1/‖·‖) ⊙ Σ_rows dy ⊙ u;  dB += s·gᵀ·xa;  dxa = s·g·B;  dA += dxaᵀ·x_d;
  ///   dx = dy·W + ((g − dy)·W + dxa·A) ⊙ mask, i.e. g·W + dxa·A without dropout.
  // dy: (N, out)  x, xd: (N, in)  xa: (N, r) → dx: (N, in)
  private func doraBackward(_ be: Backend, linear: Linear, dy: Tensor, x: Tensor, xd: Tensor, mask: Tensor?,
                            xa: Tensor, dx: Tensor?, accumulateInput: Bool, ones: Tensor) throws {
    guard let magnitudeGrad, let inverseNorm, let magnitudeScale else { return }
    let n = x.shape[0], outF = linear.outFeatures
    // Magnitude: u recomputed (one more base matmul) rather than kept per adapter.
    let u = try workspace.scratch(.outputRows, [n, outF])
    try be.linear(xd, linear.base, into: u, beta: 0)
    try be.matmul(xa, b, into: u, transposeA: false, transposeB: true, alpha: scaling, beta: 1)
    try be.mul(u, dy, into: u)
    let col = try workspace.scratch(.columnSum, [1, outF])
    try be.matmul(try ones.view(shape: [1, n]), u, into: col, transposeA: false, transposeB: false,
                  alpha: 1, beta: 0)
    try be.mul(col, inverseNorm, into: col)
    try be.add(magnitudeGrad, col, alpha: 1, into: magnitudeGrad)
    // LoRA factors through g = dy ⊙ m̂ (u's buffer is free again).
    let g = u
    try be.mul(dy, magnitudeScale, into: g)
    let dxa = try workspace.scratch(.rankRows, [n, rank])
    try be.matmul(g, xa, into: bGrad, transposeA: true, transposeB: false, alpha: scaling, beta: 1)
    try be.matmul(g, b, into: dxa, transposeA: false, transposeB: false, alpha: scaling, beta: 0)
    try be.matmul(dxa, xd, into: aGrad, transposeA: true, transposeB: false, alpha: 1, beta: 1)
    // Bias (and, were it trained, nothing else): db += Σ dy, outside the magnitude scale.
    var biasOnly = linear
    biasOnly.weightGrad = nil
    try biasOnly.baseBackward(be, dy: dy, x: x, dx: nil, accumulateInput: false, ones: ones)
    guard let dx else { return }
    let frozen = Linear(base: linear.base)
    if let mask {
      try frozen.baseBackward(be, dy: dy, x: x, dx: dx, accumulateInput: accumulateInput, ones: ones)
      try be.add(g, dy, alpha: -1, into: g)
      let t = try workspace.scratch(.inputRows, [n, linear.inFeatures])
      try frozen.baseBackward(be, dy: g, x: x, dx: t, accumulateInput: false, ones: ones)
      try be.matmul(dxa, a, into: t, transposeA: false, transposeB: false, alpha: 1, beta: 1)
      try be.mul(t, mask, into: t)
      try be.add(dx, t, alpha: 1, into: dx)
    } else {
      try frozen.baseBackward(be, dy: g, x: x, dx: dx, accumulateInput: accumulateInput, ones: ones)
      try be.matmul(dxa, a, into: dx, transposeA: false, transposeB: false, alpha: 1, beta: 1)
    }
  }
}
