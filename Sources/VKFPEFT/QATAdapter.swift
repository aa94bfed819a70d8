// Quantisation-aware training (--qat int8 | int4): every trained projection computes with the
// fake-quantised form of its weight — the rounding `quantize` / `export --outtype q4_0` will
// apply — and its gradient passes straight through the rounding to the f32 master weight.
import VKFCore
import VKFModel

/// The fake-quantised weights of all adapters, one scratch tensor per weight shape (recomputed
/// in the backward rather than kept, so QAT costs one extra weight per shape, not per layer).
public final class FakeQuantScratch {
  private var tensors: [[Int]: Tensor] = [:]
  public init() {}
  func tensor(_ shape: [Int], on be: Backend) throws -> Tensor {
    if let t = tensors[shape] { return t }
    let t = try be.allocate(shape)
    tensors[shape] = t
    return t
  }
}

/// A projection trained under fake quantisation with the straight-through estimator:
/// y = x·Ŵᵀ + b and dx = dy·Ŵ with Ŵ = fakeQuantize(W); dW += dyᵀ·x (dL/dW := dL/dŴ); db as usual.
public final class FakeQuantAdapter: LinearAdapter, WeightPreservingAdapter {
  public let kind: FakeQuant
  let scratch: FakeQuantScratch

  public init(kind: FakeQuant, scratch: FakeQuantScratch) { self.kind = kind; self.scratch = scratch }

  func quantized(_ be: Backend, _ linear: Linear) throws -> Tensor {
    guard let w = linear.denseWeight else { throw PEFTError("QAT needs dense f32 projection weights") }
    let q = try scratch.tensor(w.shape, on: be)
    try be.fakeQuantize(w, kind: kind, into: q)
    return q
  }

  public func forward(_ be: Backend, linear: Linear, x: Tensor, into y: Tensor) throws {
    var l = linear
    l.base = .dense(try quantized(be, linear))
    try l.baseForward(be, x, into: y)
  }

  public func backward(_ be: Backend, linear: Linear, dy: Tensor, x: Tensor, dx: Tensor?, accumulateInput: Bool,
                       ones: Tensor) throws {
    var l = linear
    l.base = .dense(try quantized(be, linear))
    try l.baseBackward(be, dy: dy, x: x, dx: dx, accumulateInput: accumulateInput, ones: ones)
  }

  /// Attaches a fake-quantising adapter to every projection of `weights` (full fine-tuning:
  /// each must be dense and trained); returns how many.
  @discardableResult
  public static func attach(to weights: DecoderWeights, kind: FakeQuant) throws -> Int {
    let scratch = FakeQuantScratch()
    var n = 0
    try weights.updateProjections { module, linear in
      guard linear.denseWeight != nil, linear.weightGrad != nil, linear.adapter == nil else {
        throw PEFTError("QAT fake-quantises trained dense weights, but \(module) is frozen, quantised or adapted; "
          + "use --method full")
      }
      if kind == .q4_0, linear.inFeatures % 32 != 0 {
        throw PEFTError("\(module) has rows of \(linear.inFeatures) values; Q4_0 needs multiples of 32")
      }
      linear.adapter = FakeQuantAdapter(kind: kind, scratch: scratch)
      n += 1
    }
    return n
  }
}
