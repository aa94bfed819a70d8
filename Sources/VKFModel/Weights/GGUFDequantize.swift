/// Converts ggml-encoded tensor data to f32 with ggml's exact arithmetic
/// (ggml-quants.c `dequantize_row_*`), over raw pointers for speed.
///
/// Each routine takes `count` elements (a multiple of the type's block size, checked by the
/// caller) from `src` and writes them to `dst`. The float expressions keep ggml's operation
/// order (e.g. Q4_K `(d·sc)·q − (dmin·m)`) so results match llama.cpp and gguf-py bit for bit.
enum GGUFDequantizer {
  /// Dequantises `count` elements of `type`; false when the type is not supported.
  static func dequantize(
    _ type: GGMLType, _ src: UnsafeRawPointer, count: Int, into dst: UnsafeMutablePointer<Float>
  ) -> Bool {
    switch type {
    case .f32:
      // A byte copy: `general.alignment` may legally be 1 or 2, so `src` may be misaligned.
      UnsafeMutableRawPointer(dst).copyMemory(from: src, byteCount: 4 * count)
    case .f16: f16(src, count, dst)
    case .bf16: bf16(src, count, dst)
    case .q8_0: q8_0(src, count, dst)
    case .q4_0: q4_0(src, count, dst)
    case .q4_1: q4_1(src, count, dst)
    case .q5_0: q5(src, count, dst, withMin: false)
    case .q5_1: q5(src, count, dst, withMin: true)
    case .q4_K: q4_K(src, count, dst)
    case .q5_K: q5_K(src, count, dst)
    case .q6_K: q6_K(src, count, dst)
    case .q8_K: q8_K(src, count, dst)
    default: return false
    }
    return true
  }

  // MARK: - Scalars

  /// f16 bits → f32 for every bit pattern (exact; 256 KiB, built once).
  static let halfTable: [Float] = (0 ... UInt16.max).map { Float(Float16(bitPattern: $0)) }

  @inline(__always)
  private static func u8(_ p: UnsafeRawPointer, _ offset: Int) -> UInt8 {
    p.load(fromByteOffset: offset, as: UInt8.self)
  }

  @inline(__always)
  private static func half(_ p: UnsafeRawPointer, _ offset: Int, _ table: UnsafeBufferPointer<Float>) -> Float {
    table[Int(UInt16(littleEndian: p.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))]
  }

  private static func withHalfTable<R>(_ body: (UnsafeBufferPointer<Float>) -> R) -> R {
    halfTable.withUnsafeBufferPointer(body)
  }

  // MARK: - Plain types

  private static func f16(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
    withHalfTable { table in
      for i in 0 ..< count { dst[i] = half(src, 2 * i, table) }
    }
  }

  private static func bf16(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
    for i in 0 ..< count {
      let bits = UInt16(littleEndian: src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self))
      dst[i] = Float(bitPattern: UInt32(bits) << 16)
    }
  }

  // MARK: - 32-element blocks

  /// Q8_0: f16 d, 32 × int8 q; x = q·d.
  private static func q8_0(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
    withHalfTable { table in
      for block in 0 ..< count / 32 {
        let p = src + block * 34
        let d = half(p, 0, table)
        let y = dst + block * 32
        for j in 0 ..< 32 { y[j] = Float(Int8(bitPattern: u8(p, 2 + j))) * d }
      }
    }
  }

  /// Q4_0: f16 d, 16 bytes; low nibbles are elements 0…15, high nibbles 16…31; x = (q − 8)·d.
  private static func q4_0(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
    withHalfTable { table in
      for block in 0 ..< count / 32 {
        let p = src + block * 18
        let d = half(p, 0, table)
        let y = dst + block * 32
        for j in 0 ..< 16 {
          let byte = u8(p, 2 + j)
          y[j] = Float(Int(byte & 0x0F) - 8) * d
          y[j + 16] = Float(Int(byte >> 4) - 8) * d
        }
      }
    }
  }

  /// Q4_1: f16 d, f16 m, 16 bytes (Q4_0 nibble order); x = q·d + m.
  private static func q4_1(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
    withHalfTable { table in
      for block in 0 ..< count / 32 {
        let p = src + block * 20
        let d = half(p, 0, table)
        let m = half(p, 2, table)
        let y = dst + block * 32
        for j in 0 ..< 16 {
          let byte = u8(p, 4 + j)
          y[j] = Float(byte & 0x0F) * d + m
          y[j + 16] = Float(byte >> 4) * d + m
        }
      }
    }
  }

  /// Q5_0 (f16 d, 32 fifth bits, 16 bytes; x = (q − 16)·d) and Q5_1 (f16 d, f16 m, 32 fifth
  /// bits, 16 bytes; x = q·d + m): Q4_0's nibble order, bit j of the little-endian high word
  /// the fifth bit of element j.
  private static func q5(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>, withMin: Bool) {
    let size = withMin ? 24 : 22, bits = withMin ? 4 : 2
    withHalfTable { table in
      for block in 0 ..< count / 32 {
        let p = src + block * size
        let d = half(p, 0, table)
        let m = withMin ? half(p, 2, table) : 0
        let qh = UInt32(littleEndian: p.loadUnaligned(fromByteOffset: bits, as: UInt32.self))
        let y = dst + block * 32
        for j in 0 ..< 16 {
          let byte = u8(p, bits + 4 + j)
          let q0 = Int(byte & 0x0F) | Int((qh >> UInt32(j)) << 4 & 0x10)
          let q1 = Int(byte >> 4) | Int((qh >> UInt32(j + 12)) & 0x10)
          if withMin {
            y[j] = Float(q0) * d + m
            y[j + 16] = Float(q1) * d + m
          } else {
            y[j] = Float(q0 - 16) * d
            y[j + 16] = Float(q1 - 16) * d
          }
        }
      }
    }
  }

  // MARK: - K-quants (256-element super-blocks)

  /// The 6-bit scale and min of sub-block `j` (0…7) from Q4_K/Q5_K's 12 packed bytes
  /// (ggml-quants.c `get_scale_min_k4`).
  @inline(__always)
  private static func scaleMin(_ j: Int, _ q: UnsafeRawPointer) -> (Float, Float) {
    if j < 4 {
      return (Float(u8(q, j) & 63), Float(u8(q, j + 4) & 63))
    }
    let scale = (u8(q, j + 4) & 0x0F) | ((u8(q, j - 4) >> 6) << 4)
    let min = (u8(q, j + 4) >> 4) | ((u8(q, j) >> 6) << 4)
    return (Float(scale), Float(min))
  }

  /// Q4_K: f16 d, f16 dmin, 12 scale bytes, 128 bytes q. Each 64-element chunk uses 32 bytes:
  /// low nibbles with sub-block 2c, high nibbles with 2c+1; x = (d·sc)·q − dmin·m.
  private static func q4_K(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
    withHalfTable { table in
      for block in 0 ..< count / 256 {
        let p = src + block * 144
        let d = half(p, 0, table)
        let dmin = half(p, 2, table)
        let scales = p + 4
        let qs = p + 16
        let y = dst + block * 256
        for chunk in 0 ..< 4 {
          let (sc1, m1) = scaleMin(2 * chunk, scales)
          let (sc2, m2) = scaleMin(2 * chunk + 1, scales)
          let d1 = d * sc1, min1 = dmin * m1, d2 = d * sc2, min2 = dmin * m2
          let q = qs + 32 * chunk
          let out = y + 64 * chunk
          for l in 0 ..< 32 {
            let byte = u8(q, l)
            out[l] = d1 * Float(byte & 0x0F) - min1
            out[l + 32] = d2 * Float(byte >> 4) - min2
          }
        }
      }
    }
  }

  /// Q5_K: Q4_K plus 32 bytes of high bits (qh) before qs; chunk c takes bit 2c (low nibbles)
  /// and bit 2c+1 (high nibbles) of qh[l] as the fifth bit.
  private static func q5_K(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
    withHalfTable { table in
      for block in 0 ..< count / 256 {
        let p = src + block * 176
        let d = half(p, 0, table)
        let dmin = half(p, 2, table)
        let scales = p + 4
        let qh = p + 16
        let qs = p + 48
        let y = dst + block * 256
        for chunk in 0 ..< 4 {
          let (sc1, m1) = scaleMin(2 * chunk, scales)
          let (sc2, m2) = scaleMin(2 * chunk + 1, scales)
          let d1 = d * sc1, min1 = dmin * m1, d2 = d * sc2, min2 = dmin * m2
          let lowBit = UInt8(1) << UInt8(2 * chunk), highBit = UInt8(2) << UInt8(2 * chunk)
          let q = qs + 32 * chunk
          let out = y + 64 * chunk
          for l in 0 ..< 32 {
            let byte = u8(q, l), h = u8(qh, l)
            let lo = (byte & 0x0F) + (h & lowBit != 0 ? 16 : 0)
            let hi = (byte >> 4) + (h & highBit != 0 ? 16 : 0)
            out[l] = d1 * Float(lo) - min1
            out[l + 32] = d2 * Float(hi) - min2
          }
        }
      }
    }
  }

  /// Q6_K: 128 bytes ql, 64 bytes qh, 16 int8 scales, f16 d. Each 128-element half uses
  /// 64 ql bytes, 32 qh bytes and 8 scales; x = (d·sc)·(q − 32).
  private static func q6_K(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
    withHalfTable { table in
      for block in 0 ..< count / 256 {
        let p = src + block * 210
        let d = half(p, 208, table)
        for halfIndex in 0 ..< 2 {
          let ql = p + 64 * halfIndex
          let qh = p + 128 + 32 * halfIndex
          let sc = p + 192 + 8 * halfIndex
          let y = dst + block * 256 + 128 * halfIndex
          for l in 0 ..< 32 {
            let scaleIndex = l / 16
            let a = u8(ql, l), b = u8(ql, l + 32), h = u8(qh, l)
            let q1 = Int((a & 0x0F) | ((h & 3) << 4)) - 32
            let q2 = Int((b & 0x0F) | (((h >> 2) & 3) << 4)) - 32
            let q3 = Int((a >> 4) | (((h >> 4) & 3) << 4)) - 32
            let q4 = Int((b >> 4) | (((h >> 6) & 3) << 4)) - 32
            y[l] = d * Float(Int8(bitPattern: u8(sc, scaleIndex))) * Float(q1)
            y[l + 32] = d * Float(Int8(bitPattern: u8(sc, scaleIndex + 2))) * Float(q2)
            y[l + 64] = d * Float(Int8(bitPattern: u8(sc, scaleIndex + 4))) * Float(q3)
            y[l + 96] = d * Float(Int8(bitPattern: u8(sc, scaleIndex + 6))) * Float(q4)
          }
        }
      }
    }
  }

  /// Q8_K: f32 d, 256 × int8 q, 16 × int16 block sums (unused here); x = d·q.
  private static func q8_K(_ src: UnsafeRawPointer, _ count: Int, _ dst: UnsafeMutablePointer<Float>) {
    for block in 0 ..< count / 256 {
      let p = src + block * 292
      let d = Float(bitPattern: UInt32(littleEndian: p.loadUnaligned(as: UInt32.self)))
      let y = dst + block * 256
      for j in 0 ..< 256 { y[j] = d * Float(Int8(bitPattern: u8(p, 4 + j))) }
    }
  }
}
