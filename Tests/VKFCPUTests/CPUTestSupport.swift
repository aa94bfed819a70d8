import VKFCore
import VKFTestSupport
import XCTest

@testable import VKFCPU

/// Tolerances shared by the CPU tests; each says why it has its value.
enum Tol {
  /// f32 results vs a Double reference for short reductions (k ≲ 200): each output carries
  /// a few ulps (≈1e-7 relative), so NMSE ≈ 1e-13; 1e-10 leaves three orders of margin.
  static let f32NMSE = 1e-10
  /// Largest absolute error for O(1) values computed in f32 with reductions ≲ 200 terms:
  /// √k·ulp(1)·|terms| ≈ 2e-6; 2e-5 allows the unlucky element.
  static let f32MaxAbs = 2e-5
  /// Our vectorised exp (Cephes polynomial) vs libm: ≤ 2 ulp relative in f32.
  static let expRelative: Float = 2.5e-7
  /// Central differences of an f32 forward pass: truncation O(h²) with h = 1e-2 plus f32
  /// rounding of L (≈1e-7·|L|/h ≈ 1e-4 for |L| ≈ 10). NMSE 1e-4 means ≈1 % relative error.
  static let gradNMSE = 1e-4
  /// Absolute bound for the same finite differences on O(0.1–1) gradients.
  static let gradMaxAbs = 3e-3
  /// NF4 round trip: the largest gap between neighbouring codes is −0.6961928 − (−1) ≈ 0.3038,
  /// so a value is at most half of that (·absmax) away from its code.
  static let nf4HalfGap: Float = 0.1520
  /// AdamW in f32 vs the formula in Double over 3 steps: the update m/(√v+eps) is O(1)
  /// and carries a few ulps; times lr (1e-2) that is ≈1e-8 absolute on O(1) parameters.
  static let adamMaxAbs = 1e-6
}

/// Shorthands over the shared CPU backend.
enum T {
  static var cpu: CPUBackend { TestBackends.cpu }

  static func f32(_ values: [Float], _ shape: [Int]) throws -> Tensor {
    try cpu.tensor(values, shape: shape)
  }

  static func i32(_ values: [Int32], _ shape: [Int]) throws -> Tensor {
    try cpu.tensor(values, shape: shape)
  }

  static func zeros(_ shape: [Int]) throws -> Tensor {
    let t = try cpu.allocate(shape, .f32)
    try cpu.fill(t, value: 0)
    return t
  }

  static func read(_ t: Tensor) throws -> [Float] { try cpu.floats(t) }

  /// Asserts `actual` matches `expected` within both bounds.
  static func assertClose(_ expected: [Float], _ actual: [Float], nmse: Double, maxAbs: Double,
                          _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    if let m = Compare.check(expected, actual, nmse: nmse, maxAbs: maxAbs) {
      XCTFail("\(what): \(m)", file: file, line: line)
    }
  }

  /// Σ a·r in Double: the scalar loss of the gradient checks.
  static func dot(_ a: [Float], _ r: [Float]) -> Double {
    var s = 0.0
    for i in 0..<a.count { s += Double(a[i]) * Double(r[i]) }
    return s
  }

  /// Central differences (L(x + h·eᵢ) − L(x − h·eᵢ)) / 2h at the coordinates `at`.
  static func numericGradient(_ x: [Float], at: [Int], h: Float,
                              _ loss: ([Float]) throws -> Double) rethrows -> [Float] {
    var out = [Float]()
    var xp = x
    for i in at {
      xp[i] = x[i] + h
      let lp = try loss(xp)
      xp[i] = x[i] - h
      let lm = try loss(xp)
      xp[i] = x[i]
      out.append(Float((lp - lm) / (2 * Double(h))))
    }
    return out
  }

  /// Up to `count` distinct coordinates of 0..<n, spread deterministically.
  static func sample(_ n: Int, _ count: Int, seed: UInt64 = 7) -> [Int] {
    if n <= count { return Array(0..<n) }
    var rng = SeededRNG(seed: seed)
    var s = Set<Int>()
    while s.count < count { s.insert(Int.random(in: 0..<n, using: &rng)) }
    return s.sorted()
  }

  /// Naive row-major C (m, n) = α·op(A)·op(B) + β·C in Double.
  static func matmul(_ a: [Float], _ b: [Float], _ c: [Float], m: Int, n: Int, k: Int,
                     ta: Bool, tb: Bool, alpha: Float = 1, beta: Float = 0) -> [Float] {
    var out = [Float](repeating: 0, count: m * n)
    for i in 0..<m {
      for j in 0..<n {
        var s = 0.0
        for p in 0..<k {
          let av = ta ? a[p * m + i] : a[i * k + p]
          let bv = tb ? b[j * k + p] : b[p * n + j]
          s += Double(av) * Double(bv)
        }
        let prev = beta == 0 ? 0 : Double(beta) * Double(c[i * n + j])
        out[i * n + j] = Float(Double(alpha) * s + prev)
      }
    }
    return out
  }
}
