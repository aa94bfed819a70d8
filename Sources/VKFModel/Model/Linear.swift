import VKFCore

/// A dense projection y = x·Wᵀ (+ b), with W (out, in) as Hugging Face stores it.
///
/// Every projection of the block goes through this type, so adapters (LoRA, QLoRA) can wrap
/// the seven projections in one place. Gradients live beside the parameters: `weightGrad` /
/// `biasGrad` are nil for a frozen parameter and accumulate (`+=`) otherwise.
public struct Linear {
  /// W (out, in).
  public var weight: Tensor
  /// b (out), or nil.
  public var bias: Tensor?
  /// dW (out, in), accumulated; nil when W is frozen.
  public var weightGrad: Tensor?
  /// db (out), accumulated; nil when b is frozen or absent.
  public var biasGrad: Tensor?

  /// A projection with optional bias and gradient buffers.
  public init(weight: Tensor, bias: Tensor? = nil, weightGrad: Tensor? = nil, biasGrad: Tensor? = nil) {
    self.weight = weight; self.bias = bias; self.weightGrad = weightGrad; self.biasGrad = biasGrad
  }

  /// Output features.
  public var outFeatures: Int { weight.shape[0] }
  /// Input features.
  public var inFeatures: Int { weight.lastDim }
  /// True when backward produces a parameter gradient.
  public var isTrained: Bool { weightGrad != nil || biasGrad != nil }

  /// y = x·Wᵀ + b.
  // x: (N, in)  W: (out, in)  b: (out) → y: (N, out)
  public func forward(_ be: Backend, _ x: Tensor, into y: Tensor) throws {
    try be.matmul(x, weight, into: y, transposeA: false, transposeB: true, alpha: 1, beta: 0)
    if let bias { try be.add(y, bias, alpha: 1, into: y) }
  }

  /// dx (= or += when `accumulateInput`) dy·W; dW += dyᵀ·x; db += Σ_rows dy.
  /// `ones` is an (N) vector of ones: the row sum of the bias gradient is a matmul with it.
  // dy: (N, out)  x: (N, in) → dx: (N, in), dW: (out, in), db: (out)
  public func backward(_ be: Backend, dy: Tensor, x: Tensor, dx: Tensor?, accumulateInput: Bool,
                       ones: Tensor) throws {
    if let dx {
      try be.matmul(dy, weight, into: dx, transposeA: false, transposeB: false, alpha: 1,
                    beta: accumulateInput ? 1 : 0)
    }
    if let weightGrad {
      try be.matmul(dy, x, into: weightGrad, transposeA: true, transposeB: false, alpha: 1, beta: 1)
    }
    if let biasGrad {
      let n = dy.rowCount
      try be.matmul(try ones.view(shape: [1, n]), dy, into: try biasGrad.reshaped([1, outFeatures]),
                    transposeA: false, transposeB: false, alpha: 1, beta: 1)
    }
  }
}
