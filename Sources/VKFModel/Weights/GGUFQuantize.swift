// ggml's reference quantisers for writing GGUF (gguf-py quants.py, ggml-quants.c
// quantize_row_*_ref): blocks of 32 consecutive values of a row, f32 arithmetic, the block
// scale stored as an IEEE half rounded to nearest even.

/// Encodes f32 values as GGUF tensor data.
public enum GGUFQuantize {
  /// Elements per Q8_0 / Q4_0 block.
  public static let blockSize = 32

  /// Q8_0 (34 bytes a block: f16 d, 32 × int8): d = max|x|/127, q = round-half-away(x · (1/d)),
  /// the quotient from the f32 1/d as ggml does. `values.count` must be a multiple of 32.
  public static func q8_0(_ values: [Float]) -> [UInt8] {
    precondition(values.count % blockSize == 0, "Q8_0 needs whole blocks of 32")
    var out = [UInt8]()
    out.reserveCapacity(values.count / blockSize * 34)
    for b in stride(from: 0, to: values.count, by: blockSize) {
      let block = values[b..<(b + blockSize)]
      let amax = block.reduce(Float(0)) { max($0, abs($1)) }
      let d = amax / 127
      let id: Float = d != 0 ? 1 / d : 0
      appendHalf(d, to: &out)
      for x in block { out.append(UInt8(bitPattern: Int8((x * id).rounded(.toNearestOrAwayFromZero)))) }
    }
    return out
  }

  /// Q4_0 (18 bytes a block: f16 d, 16 bytes of nibbles): d = (the value of largest magnitude,
  /// signed, first one) / −8, q = min(15, trunc(x · (1/d) + 8.5)); byte j holds q[j] in its low
  /// nibble and q[j + 16] in its high one. The product and the sum round separately (no fused
  /// multiply-add), as the references do.
  public static func q4_0(_ values: [Float]) -> [UInt8] {
    precondition(values.count % blockSize == 0, "Q4_0 needs whole blocks of 32")
    var out = [UInt8]()
    out.reserveCapacity(values.count / blockSize * 18)
    var q = [UInt8](repeating: 0, count: blockSize)
    for b in stride(from: 0, to: values.count, by: blockSize) {
      var amax: Float = 0, extreme: Float = 0
      for j in 0..<blockSize where abs(values[b + j]) > amax { amax = abs(values[b + j]); extreme = values[b + j] }
      let d = extreme / -8
      let id: Float = d != 0 ? 1 / d : 0
      appendHalf(d, to: &out)
      for j in 0..<blockSize {
        let scaled = values[b + j] * id
        let shifted = scaled + 8.5
        q[j] = UInt8(min(15, Int8(shifted.rounded(.towardZero))))
      }
      for j in 0..<(blockSize / 2) { out.append(q[j] | (q[j + blockSize / 2] << 4)) }
    }
    return out
  }

  /// Little-endian IEEE half of `x`, rounded to nearest even.
  static func appendHalf(_ x: Float, to out: inout [UInt8]) {
    let bits = Float16(x).bitPattern
    out.append(UInt8(bits & 0xff))
    out.append(UInt8(bits >> 8))
  }
}
