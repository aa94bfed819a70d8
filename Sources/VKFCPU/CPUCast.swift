import VKFCore

/// Conversions between f32, f16 and bf16 (round to nearest even, via `Float16` and
/// `BFloat16`), split over the cores for big tensors.
enum CPUCast {
  static func f32ToF16(_ s: UnsafePointer<Float>, _ d: UnsafeMutablePointer<UInt16>, _ n: Int) {
    map(s, d, n) { Float16($0).bitPattern }
  }

  /// Through a 65536-entry table (256 KiB, L2-resident): Float(Float16) is a library call
  /// per element on x86-64 without F16C, and this is the widening matmul's inner loop.
  static func f16ToF32(_ s: UnsafePointer<UInt16>, _ d: UnsafeMutablePointer<Float>, _ n: Int) {
    f16Table.withUnsafeBufferPointer { table in
      let t = UncheckedSendable(table.baseAddress.unsafelyUnwrapped)
      let src = UncheckedSendable(s), dst = UncheckedSendable(d)
      CPUParallel.forRanges(n) { r in
        let s = src.value, d = dst.value, t = t.value
        for i in r { d[i] = t[Int(s[i])] }
      }
    }
  }

  /// Float(Float16(bitPattern: h)) for every h.
  static let f16Table: [Float] = (0...0xFFFF).map { Float(Float16(bitPattern: UInt16($0))) }

  /// BFloat16.fromFloat written out on the bits (no closure per element) so the loop
  /// vectorises: mixed precision stores every layer's activations through it.
  static func f32ToBF16(_ s: UnsafePointer<Float>, _ d: UnsafeMutablePointer<UInt16>, _ n: Int) {
    let src = UncheckedSendable(UnsafeRawPointer(s).assumingMemoryBound(to: UInt32.self))
    let dst = UncheckedSendable(d)
    CPUParallel.forRanges(n) { r in
      let s = src.value, d = dst.value
      for i in r {
        let bits = s[i]
        let rounded = UInt16(truncatingIfNeeded: (bits &+ 0x7FFF &+ ((bits &>> 16) & 1)) &>> 16)
        let quietNaN = UInt16(truncatingIfNeeded: bits &>> 16) | 0x0040
        d[i] = (bits & 0x7FFF_FFFF) > 0x7F80_0000 ? quietNaN : rounded
      }
    }
  }

  /// A 16-bit shift per element, written out as integers (no closure per element) so the
  /// loop vectorises: this is the widening matmul's inner loop.
  static func bf16ToF32(_ s: UnsafePointer<UInt16>, _ d: UnsafeMutablePointer<Float>, _ n: Int) {
    let src = UncheckedSendable(s)
    let dst = UncheckedSendable(UnsafeMutableRawPointer(d).assumingMemoryBound(to: UInt32.self))
    CPUParallel.forRanges(n) { r in
      let s = src.value, d = dst.value
      for i in r { d[i] = UInt32(truncatingIfNeeded: s[i]) &<< 16 }
    }
  }

  static func f16ToBF16(_ s: UnsafePointer<UInt16>, _ d: UnsafeMutablePointer<UInt16>, _ n: Int) {
    map(s, d, n) { BFloat16.fromFloat(Float(Float16(bitPattern: $0))) }
  }

  static func bf16ToF16(_ s: UnsafePointer<UInt16>, _ d: UnsafeMutablePointer<UInt16>, _ n: Int) {
    map(s, d, n) { Float16(BFloat16.toFloat($0)).bitPattern }
  }

  @inline(__always)
  private static func map<S, D>(_ s: UnsafePointer<S>, _ d: UnsafeMutablePointer<D>, _ n: Int,
                                _ f: (S) -> D) {
    let src = UncheckedSendable(s), dst = UncheckedSendable(d)
    CPUParallel.forRanges(n) { r in
      let s = src.value, d = dst.value
      for i in r { d[i] = f(s[i]) }
    }
  }
}
