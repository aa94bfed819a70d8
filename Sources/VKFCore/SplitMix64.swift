import Foundation

/// SplitMix64 (Steele, Lea, Flood 2014): a tiny seeded RNG whose stream is the same on every
/// platform, unlike `SystemRandomNumberGenerator`. The one generator behind data shuffling,
/// sampling, synthetic benchmark inputs and seeded test data.
public struct SplitMix64: RandomNumberGenerator, Sendable {
  private var state: UInt64

  /// A generator whose whole stream is fixed by `seed`.
  public init(seed: UInt64) { state = seed }

  /// The next 64 random bits.
  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }

  /// A uniform double in [0, 1) from the top 53 bits.
  public mutating func nextUnitDouble() -> Double { Double(next() >> 11) * 0x1p-53 }

  /// `count` draws from normal(0, std²) by Box–Muller, two per pair of uniforms: the seeded
  /// initialisation of new heads (transformers' `normal_(0, initializer_range)`).
  public mutating func normals(count: Int, std: Double) -> [Float] {
    var values: [Float] = []
    values.reserveCapacity(count + 1)
    while values.count < count {
      let u1 = max(nextUnitDouble(), 1e-300), u2 = nextUnitDouble()
      let r = (-2 * log(u1)).squareRoot()
      values.append(Float(std * r * cos(2 * .pi * u2)))
      values.append(Float(std * r * sin(2 * .pi * u2)))
    }
    return Array(values.prefix(count))
  }
}
