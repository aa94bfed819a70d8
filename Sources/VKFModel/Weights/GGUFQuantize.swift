// ggml's reference quantisers for writing GGUF (ggml-quants.c quantize_row_*_ref; gguf-py's
// quants.py for the 32-blocked ones): f32 arithmetic in the references' operation order, block
// scales stored as IEEE halves rounded to nearest even. Blocks are independent, so a tensor is
// quantised in parallel chunks with the same bytes as one pass.
import Foundation

/// Encodes f32 values as GGUF tensor data.
public enum GGUFQuantize {
  /// Elements per Q8_0 / Q4_0 / Q5_0 / Q5_1 block.
  public static let blockSize = 32

  /// The block types this encoder writes.
  public static let types: Set<GGMLType> = [.q8_0, .q4_0, .q5_0, .q5_1, .q4_K, .q5_K, .q6_K]

  /// `values` (whole blocks of `type`, rows laid end to end) as `type`'s GGUF bytes.
  public static func quantize(_ values: [Float], as type: GGMLType) -> [UInt8] {
    let (perBlock, bytes) = type.blockLayout
    precondition(types.contains(type), "no quantiser for \(type.name)")
    precondition(values.count % perBlock == 0, "\(type.name) needs whole blocks of \(perBlock)")
    let blocks = values.count / perBlock
    var out = [UInt8](repeating: 0, count: blocks * bytes)
    // Chunks of blocks per worker: big enough to amortise dispatch, small enough to balance.
    let chunk = max(1, 16_384 / perBlock)
    values.withUnsafeBufferPointer { src in
      out.withUnsafeMutableBufferPointer { dst in
        let pointers = BlockPointers(x: src.baseAddress!, y: dst.baseAddress!)
        DispatchQueue.concurrentPerform(iterations: (blocks + chunk - 1) / chunk) { c in
          let x = pointers.x, y = pointers.y
          for b in (c * chunk)..<min(blocks, (c + 1) * chunk) {
            let xb = x + b * perBlock, yb = y + b * bytes
            switch type {
            case .q8_0: q8_0Block(xb, yb)
            case .q4_0: q4_0Block(xb, yb)
            case .q5_0: q5_0Block(xb, yb)
            case .q5_1: q5_1Block(xb, yb)
            case .q4_K: GGUFKQuantize.q4_KBlock(xb, yb)
            case .q5_K: GGUFKQuantize.q5_KBlock(xb, yb)
            default: GGUFKQuantize.q6_KBlock(xb, yb)
            }
          }
        }
      }
    }
    return out
  }

  /// The source and destination of a parallel quantisation; each worker touches only its own
  /// blocks of both.
  private struct BlockPointers: @unchecked Sendable {
    let x: UnsafePointer<Float>
    let y: UnsafeMutablePointer<UInt8>
  }

  /// Q8_0 (34 bytes a block: f16 d, 32 × int8): d = max|x|/127, q = round-half-away(x · (1/d)),
  /// the quotient from the f32 1/d as ggml does. `values.count` must be a multiple of 32.
  public static func q8_0(_ values: [Float]) -> [UInt8] { quantize(values, as: .q8_0) }

  /// Q4_0 (18 bytes a block: f16 d, 16 bytes of nibbles): d = (the value of largest magnitude,
  /// signed, first one) / −8, q = min(15, trunc(x · (1/d) + 8.5)); byte j holds q[j] in its low
  /// nibble and q[j + 16] in its high one. The product and the sum round separately (no fused
  /// multiply-add), as the references do.
  public static func q4_0(_ values: [Float]) -> [UInt8] { quantize(values, as: .q4_0) }

  static func q8_0Block(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<UInt8>) {
    var amax: Float = 0
    for j in 0..<32 { amax = max(amax, abs(x[j])) }
    let d = amax / 127
    let id: Float = d != 0 ? 1 / d : 0
    storeHalf(d, y)
    for j in 0..<32 { y[2 + j] = UInt8(bitPattern: Int8((x[j] * id).rounded(.toNearestOrAwayFromZero))) }
  }

  static func q4_0Block(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<UInt8>) {
    let (d, id) = signedExtreme(x, over: -8)
    storeHalf(d, y)
    for j in 0..<16 {
      let lo = min(15, Int8((x[j] * id + 8.5).rounded(.towardZero)))
      let hi = min(15, Int8((x[j + 16] * id + 8.5).rounded(.towardZero)))
      y[2 + j] = UInt8(lo) | (UInt8(hi) << 4)
    }
  }

  /// Q5_0 (22 bytes: f16 d, 4 bytes of fifth bits, 16 bytes of nibbles): Q4_0 with 32 levels,
  /// d = extreme / −16, q = min(31, trunc(x · (1/d) + 16.5)); bit j of the little-endian
  /// 32-bit high word is q[j]'s fifth bit.
  static func q5_0Block(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<UInt8>) {
    let (d, id) = signedExtreme(x, over: -16)
    storeHalf(d, y)
    var qh: UInt32 = 0
    for j in 0..<16 {
      let lo = UInt8(min(31, Int8((x[j] * id + 16.5).rounded(.towardZero))))
      let hi = UInt8(min(31, Int8((x[j + 16] * id + 16.5).rounded(.towardZero))))
      y[6 + j] = (lo & 0x0F) | ((hi & 0x0F) << 4)
      qh |= UInt32(lo >> 4) << j | UInt32(hi >> 4) << (j + 16)
    }
    storeWord(qh, y + 2)
  }

  /// Q5_1 (24 bytes: f16 d, f16 m, 4 bytes of fifth bits, 16 bytes of nibbles): d = (max −
  /// min)/31, m = min, q = trunc((x − min) · (1/d) + 0.5).
  static func q5_1Block(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<UInt8>) {
    var lo = Float.greatestFiniteMagnitude, hi = -Float.greatestFiniteMagnitude
    for j in 0..<32 {
      if x[j] < lo { lo = x[j] }
      if x[j] > hi { hi = x[j] }
    }
    let d = (hi - lo) / 31
    let id: Float = d != 0 ? 1 / d : 0
    storeHalf(d, y)
    storeHalf(lo, y + 2)
    var qh: UInt32 = 0
    for j in 0..<16 {
      let a = UInt8(((x[j] - lo) * id + 0.5).rounded(.towardZero))
      let b = UInt8(((x[j + 16] - lo) * id + 0.5).rounded(.towardZero))
      y[8 + j] = (a & 0x0F) | ((b & 0x0F) << 4)
      qh |= UInt32(a >> 4) << j | UInt32(b >> 4) << (j + 16)
    }
    storeWord(qh, y + 4)
  }

  /// The first value of largest magnitude, signed, over `levels` (−8 / −16), and its inverse
  /// (0 for an all-zero block).
  @inline(__always)
  static func signedExtreme(_ x: UnsafePointer<Float>, over levels: Float) -> (d: Float, id: Float) {
    var amax: Float = 0, extreme: Float = 0
    for j in 0..<32 where abs(x[j]) > amax { amax = abs(x[j]); extreme = x[j] }
    let d = extreme / levels
    return (d, d != 0 ? 1 / d : 0)
  }

  /// Little-endian IEEE half of `x`, rounded to nearest even.
  @inline(__always)
  static func storeHalf(_ x: Float, _ y: UnsafeMutablePointer<UInt8>) {
    let bits = Float16(x).bitPattern
    y[0] = UInt8(bits & 0xff)
    y[1] = UInt8(bits >> 8)
  }

  @inline(__always)
  static func storeWord(_ w: UInt32, _ y: UnsafeMutablePointer<UInt8>) {
    for k in 0..<4 { y[k] = UInt8(truncatingIfNeeded: w >> (8 * k)) }
  }
}
