import VKFCore

/// Something that replaces a projection's forward/backward: LoRA, DoRA, and later other
/// PEFT methods. `Linear` calls it instead of its own math when one is attached; the adapter
/// calls back into `Linear.baseForward` / `baseBackward` for the frozen part.
///
/// An adapter keeps whatever its backward needs from the last forward (e.g. LoRA's x·Aᵀ)
/// itself; the model calls forward and backward of a projection with the same x.
public protocol LinearAdapter: AnyObject {
  /// y = adapted projection of x.
  // x: (N, in) → y: (N, out)
  func forward(_ be: Backend, linear: Linear, x: Tensor, into y: Tensor) throws
  /// dx (= or += when `accumulateInput`) and the adapter's (and base's) parameter gradients.
  // dy: (N, out)  x: (N, in) → dx: (N, in)
  func backward(_ be: Backend, linear: Linear, dy: Tensor, x: Tensor, dx: Tensor?,
                accumulateInput: Bool, ones: Tensor) throws
}

/// An adapter that leaves the stored weight as it is (QAT's fake quantisation): a model with one
/// attached is written, merged and checkpointed like the plain model.
public protocol WeightPreservingAdapter: LinearAdapter {}

/// A projection y = x·Wᵀ (+ b), with W (out, in) as Hugging Face stores it: dense f32 or NF4
/// (QLoRA's frozen base).
///
/// Every projection of the block goes through this type, so adapters (LoRA, QLoRA) attach to
/// the seven projections in one place. Gradients live beside the parameters: `weightGrad` /
/// `biasGrad` are nil for a frozen parameter and accumulate (`+=`) otherwise.
public struct Linear {
  /// W (out, in): dense f32 or NF4.
  public var base: LinearWeight
  /// b (out), or nil.
  public var bias: Tensor?
  /// dW (out, in), accumulated; nil when W is frozen (always nil for NF4).
  public var weightGrad: Tensor?
  /// db (out), accumulated; nil when b is frozen or absent.
  public var biasGrad: Tensor?
  /// The attached adapter (LoRA, DoRA …), or nil for the plain projection.
  public var adapter: LinearAdapter?

  /// A dense projection with optional bias and gradient buffers.
  public init(weight: Tensor, bias: Tensor? = nil, weightGrad: Tensor? = nil, biasGrad: Tensor? = nil) {
    self.init(base: .dense(weight), bias: bias, weightGrad: weightGrad, biasGrad: biasGrad)
  }

  /// A projection over a dense or NF4 base.
  public init(base: LinearWeight, bias: Tensor? = nil, weightGrad: Tensor? = nil,
              biasGrad: Tensor? = nil, adapter: LinearAdapter? = nil) {
    self.base = base; self.bias = bias; self.weightGrad = weightGrad; self.biasGrad = biasGrad
    self.adapter = adapter
  }

  /// The dense W, or nil when the base is NF4.
  public var denseWeight: Tensor? {
    if case .dense(let t) = base { return t }
    return nil
  }

  /// Output features.
  public var outFeatures: Int { base.outFeatures }
  /// Input features.
  public var inFeatures: Int { base.inFeatures }
  /// True when backward produces a parameter gradient (of the base or of an adapter).
  public var isTrained: Bool { weightGrad != nil || biasGrad != nil || adapter != nil }

  /// y = x·Wᵀ + b, through the adapter when one is attached.
  // x: (N, in)  W: (out, in)  b: (out) → y: (N, out)
  public func forward(_ be: Backend, _ x: Tensor, into y: Tensor) throws {
    if let adapter { return try adapter.forward(be, linear: self, x: x, into: y) }
    try baseForward(be, x, into: y)
  }

  /// y = x·Wᵀ + b (+ β·y) ignoring any adapter.
  public func baseForward(_ be: Backend, _ x: Tensor, into y: Tensor, beta: Float = 0) throws {
    try be.linear(x, base, into: y, beta: beta)
    if let bias { try be.add(y, bias, alpha: 1, into: y) }
  }

  /// dx (= or += when `accumulateInput`) dy·W; dW += dyᵀ·x; db += Σ_rows dy; through the
  /// adapter when one is attached.
  /// `ones` is an (N) vector of ones: the row sum of the bias gradient is a matmul with it.
  // dy: (N, out)  x: (N, in) → dx: (N, in), dW: (out, in), db: (out)
  public func backward(_ be: Backend, dy: Tensor, x: Tensor, dx: Tensor?, accumulateInput: Bool,
                       ones: Tensor) throws {
    if let adapter {
      return try adapter.backward(be, linear: self, dy: dy, x: x, dx: dx,
                                  accumulateInput: accumulateInput, ones: ones)
    }
    try baseBackward(be, dy: dy, x: x, dx: dx, accumulateInput: accumulateInput, ones: ones)
  }

  /// The base projection's backward, ignoring any adapter.
  public func baseBackward(_ be: Backend, dy: Tensor, x: Tensor, dx: Tensor?, accumulateInput: Bool,
                           ones: Tensor) throws {
    if let dx {
      switch base {
      case .dense(let w):
        try be.matmul(dy, w, into: dx, transposeA: false, transposeB: false, alpha: 1,
                      beta: accumulateInput ? 1 : 0)
      case .nf4(let q):
        try be.matmulNF4(dy, q, into: dx, transposeB: false, alpha: 1, beta: accumulateInput ? 1 : 0)
      case .int8(let q):
        try be.matmulInt8(dy, q, into: dx, transposeB: false, alpha: 1, beta: accumulateInput ? 1 : 0)
      }
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
