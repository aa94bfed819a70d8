import VKFCore

/// Conversions between f32, f16 and bf16 (round to nearest even, via `Float16` and
/// `BFloat16`), split over the cores for big tensors.
enum CPUCast {
  static func f32ToF16(_ s: UnsafePointer<Float>, _ d: UnsafeMutablePointer<UInt16>, _ n: Int) {
    map(s, d, n) { Float16($0).bitPattern }
  }

  static func f16ToF32(_ s: UnsafePointer<UInt16>, _ d: UnsafeMutablePointer<Float>, _ n: Int) {
    map(s, d, n) { Float(Float16(bitPattern: $0)) }
  }

  static func f32ToBF16(_ s: UnsafePointer<Float>, _ d: UnsafeMutablePointer<UInt16>, _ n: Int) {
    map(s, d, n) { BFloat16.fromFloat($0) }
  }

  static func bf16ToF32(_ s: UnsafePointer<UInt16>, _ d: UnsafeMutablePointer<Float>, _ n: Int) {
    map(s, d, n) { BFloat16.toFloat($0) }
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
