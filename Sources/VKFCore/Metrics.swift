/// How two results are compared, here and in every numeric test: NMSE Σ(a−b)²/Σa² catches
/// systematic error at any scale, and a max-abs guard catches a single bad element.
public enum Metrics {
  /// Normalised mean squared error Σ(e−a)² / Σe² (0 when both are all zero).
  public static func nmse(_ expected: [Float], _ actual: [Float]) -> Double {
    precondition(expected.count == actual.count)
    var num = 0.0, den = 0.0
    for i in 0..<expected.count where expected[i] != actual[i] || expected[i].isFinite {
      // Equal infinities (an f16 overflow on both sides) are a match, not inf − inf = NaN.
      let d = Double(expected[i]) - Double(actual[i])
      num += d * d
      den += Double(expected[i]) * Double(expected[i])
    }
    if num.isNaN { return .infinity }
    if den == 0 { return num == 0 ? 0 : .infinity }
    return num / den
  }

  /// Largest |e−a|; NaN anywhere (where the other is not NaN too) gives infinity.
  public static func maxAbs(_ expected: [Float], _ actual: [Float]) -> Double {
    precondition(expected.count == actual.count)
    var m = 0.0
    for i in 0..<expected.count {
      if (expected[i].isNaN && actual[i].isNaN) || expected[i] == actual[i] { continue }
      let d = abs(Double(expected[i]) - Double(actual[i]))
      if d.isNaN { return .infinity }
      m = max(m, d)
    }
    return m
  }

  /// nil when `actual` is within both limits, else a message naming the worst element.
  public static func mismatch(_ expected: [Float], _ actual: [Float], nmse maxNMSE: Double,
                              maxAbs maxAbsErr: Double) -> String? {
    guard expected.count == actual.count else {
      return "count \(actual.count) != expected \(expected.count)"
    }
    let e = nmse(expected, actual), m = maxAbs(expected, actual)
    if e <= maxNMSE && m <= maxAbsErr { return nil }
    var worst = 0, worstErr = -1.0
    for i in 0..<expected.count {
      if expected[i] == actual[i] { continue }
      let d = abs(Double(expected[i]) - Double(actual[i]))
      let err = d.isNaN ? Double.infinity : d
      if err > worstErr { worst = i; worstErr = err }
    }
    return "nmse \(fmt(e)) (limit \(fmt(maxNMSE))), maxAbs \(fmt(m)) (limit \(fmt(maxAbsErr)));"
      + " worst [\(worst)]: expected \(expected[worst]), got \(actual[worst])"
  }

  private static func fmt(_ x: Double) -> String {
    guard x.isFinite, x != 0 else { return "\(x)" }
    let e = Int((log10(abs(x))).rounded(.down))
    let m = x / pow(10, Double(e))
    return "\(Double(Int(m * 100)) / 100)e\(e)"
  }
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
