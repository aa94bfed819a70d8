/// bfloat16 conversions by bit manipulation (Swift has no BFloat16 type on Linux).
public enum BFloat16 {
  /// f32 → bf16 bits, round to nearest even; NaN stays a quiet NaN.
  @inline(__always)
  public static func fromFloat(_ x: Float) -> UInt16 {
    let bits = x.bitPattern
    if x.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
    let rounding: UInt32 = 0x7FFF + ((bits >> 16) & 1)
    return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
  }

  /// bf16 bits → f32 (exact).
  @inline(__always)
  public static func toFloat(_ h: UInt16) -> Float { Float(bitPattern: UInt32(h) << 16) }
}
