#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Rotary position embedding frequencies (Hugging Face `rope_init_fn`s).
public enum RoPE {
  /// `rope_scaling` of type `llama3` (Llama 3.1+).
  public struct Llama3Scaling: Equatable, Sendable {
    public var factor: Double, lowFreqFactor: Double, highFreqFactor: Double
    public var originalMaxPositionEmbeddings: Double
    public init(factor: Double, lowFreqFactor: Double, highFreqFactor: Double,
                originalMaxPositionEmbeddings: Double) {
      self.factor = factor; self.lowFreqFactor = lowFreqFactor
      self.highFreqFactor = highFreqFactor
      self.originalMaxPositionEmbeddings = originalMaxPositionEmbeddings
    }
  }

  /// inv_freq[i] = theta^(−2i/headDim) for i < headDim/2, computed in f32 as transformers
  /// does (`1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))`),
  /// then the llama3 rescaling when given.
  public static func inverseFrequencies(headDim: Int, theta: Double,
                                        llama3: Llama3Scaling? = nil) -> [Float] {
    var inv = (0..<(headDim / 2)).map { i -> Float in
      let exponent = Float(2 * i) / Float(headDim)
      return 1 / powf(Float(theta), exponent)
    }
    if let s = llama3 {
      // transformers `_compute_llama3_parameters`.
      let lowWavelen = s.originalMaxPositionEmbeddings / s.lowFreqFactor
      let highWavelen = s.originalMaxPositionEmbeddings / s.highFreqFactor
      inv = inv.map { f in
        let wavelen = 2 * Double.pi / Double(f)
        if wavelen > lowWavelen { return Float(Double(f) / s.factor) }
        if wavelen < highWavelen { return f }
        let smooth = (s.originalMaxPositionEmbeddings / wavelen - s.lowFreqFactor)
          / (s.highFreqFactor - s.lowFreqFactor)
        return Float((1 - smooth) * Double(f) / s.factor + smooth * Double(f))
      }
    }
    return inv
  }
}
