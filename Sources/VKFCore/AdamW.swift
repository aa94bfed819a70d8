/// Per-step AdamW values, packed into a small f32 buffer so recorded GPU work can be reused
/// across steps (only this buffer changes). Matches `torch.optim.AdamW`:
/// p ← p·(1 − lr·wd); m ← β1·m + (1−β1)·g; v ← β2·v + (1−β2)·g²;
/// p ← p − (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps), with g = grad · gradScale · clip and
/// clip = min(1, maxGradNorm / (gradScale·sqrt(Σgrad²) + 1e-6)) when maxGradNorm > 0: the
/// norm of the *scaled* gradient, as `clip_grad_norm_` sees averaged gradients.
public struct AdamWHyperParameters: Equatable, Sendable {
  public var lr: Float
  public var beta1: Float = 0.9
  public var beta2: Float = 0.999
  public var eps: Float = 1e-8
  public var weightDecay: Float = 0.01
  /// 1-based step number t; bias corrections are 1 − βᵗ.
  public var step: Int = 1
  /// Multiplies the gradient before everything else (e.g. 1/accumulation steps).
  public var gradScale: Float = 1
  /// Global gradient-norm limit; 0 disables clipping.
  public var maxGradNorm: Float = 0

  public init(lr: Float, beta1: Float = 0.9, beta2: Float = 0.999, eps: Float = 1e-8,
              weightDecay: Float = 0.01, step: Int = 1, gradScale: Float = 1,
              maxGradNorm: Float = 0) {
    self.lr = lr; self.beta1 = beta1; self.beta2 = beta2; self.eps = eps
    self.weightDecay = weightDecay; self.step = step; self.gradScale = gradScale
    self.maxGradNorm = maxGradNorm
  }

  /// Length of the packed buffer.
  public static let count = 16

  /// Buffer layout read by `adam_w.comp` and the CPU backend:
  /// [lr, beta1, beta2, eps, weightDecay, biasCorrection1, biasCorrection2, gradScale,
  ///  maxGradNorm, 0…].
  public var packed: [Float] {
    let t = Double(step)
    let bc1 = Float(1 - pow(Double(beta1), t))
    let bc2 = Float(1 - pow(Double(beta2), t))
    var out = [Float](repeating: 0, count: Self.count)
    out[0] = lr; out[1] = beta1; out[2] = beta2; out[3] = eps; out[4] = weightDecay
    out[5] = bc1; out[6] = bc2; out[7] = gradScale; out[8] = maxGradNorm
    return out
  }

  /// The clipping factor the kernels compute from Σgrad² of the unscaled gradient.
  public static func clipFactor(sumOfSquares: Float, gradScale: Float = 1, maxGradNorm: Float) -> Float {
    guard maxGradNorm > 0 else { return 1 }
    return min(1, maxGradNorm / (gradScale * sumOfSquares.squareRoot() + 1e-6))
  }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
