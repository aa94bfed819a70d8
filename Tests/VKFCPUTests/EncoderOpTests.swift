import Foundation
import XCTest
import VKFCore
import VKFCPU
import VKFTestSupport

/// The encoder ops on the CPU (the ground truth for the shaders): LayerNorm against torch.nn.LayerNorm's
/// definition in Double, and its backward against central differences of the loss
/// Σ dOut ⊙ LayerNorm(x) in Double.
final class EncoderOpTests: XCTestCase {
  /// f32 outputs of O(1) values against Double: a few ulps.
  static let forwardMaxAbs = 1e-5
  /// Backward vs the Double chain rule: f32 sums over ≤ 67 terms; relative to the gradients' O(1) size.
  static let backwardMaxAbs = 2e-5

  /// out, mean, rstd and the gradients in Double, from the definition.
  private func reference(_ x: [Double], _ w: [Float], _ b: [Float], _ dy: [Float], rows: Int, cols: Int, eps: Double)
    -> (out: [Double], dx: [Double], dw: [Double], db: [Double]) {
    var out = [Double](repeating: 0, count: rows * cols), dx = out
    var dw = [Double](repeating: 0, count: cols), db = dw
    for r in 0..<rows {
      let row = Array(x[(r * cols)..<((r + 1) * cols)])
      let mu = row.reduce(0, +) / Double(cols)
      let variance = row.reduce(0) { $0 + ($1 - mu) * ($1 - mu) } / Double(cols)
      let s = 1 / (variance + eps).squareRoot()
      let xh = row.map { ($0 - mu) * s }
      let g = (0..<cols).map { Double(dy[r * cols + $0]) * Double(w[$0]) }
      let meanG = g.reduce(0, +) / Double(cols)
      let meanGX = zip(g, xh).reduce(0) { $0 + $1.0 * $1.1 } / Double(cols)
      for j in 0..<cols {
        out[r * cols + j] = xh[j] * Double(w[j]) + Double(b[j])
        dx[r * cols + j] = s * (g[j] - meanG - xh[j] * meanGX)
        dw[j] += Double(dy[r * cols + j]) * xh[j]
        db[j] += Double(dy[r * cols + j])
      }
    }
    return (out, dx, dw, db)
  }

  func test_layerNorm_matchesTheDefinition_andItsGradients() throws {
    let be = TestBackends.cpu
    let (rows, cols) = (67, 39)
    let x = TestData.uniform(rows * cols, seed: 1, -2, 2).map { $0 * 3 + 5 }  // mean and scale ≠ 0, 1
    let w = TestData.uniform(cols, seed: 2, 0.5, 1.5), b = TestData.uniform(cols, seed: 3)
    let dy = TestData.uniform(rows * cols, seed: 4)
    let ref = reference(x.map { Double($0) }, w, b, dy, rows: rows, cols: cols, eps: 1e-12)
    let xt = try be.tensor(x, shape: [rows, cols]), wt = try be.tensor(w, shape: [cols])
    let out = try be.allocate([rows, cols]), mean = try be.allocate([rows]), rstd = try be.allocate([rows])
    try be.layerNorm(xt, weight: wt, bias: try be.tensor(b, shape: [cols]), eps: 1e-12, into: out, mean: mean, rstd: rstd)
    let dx = try be.allocate([rows, cols])
    let dw = try be.tensor([Float](repeating: 1, count: cols), shape: [cols])  // accumulates onto 1
    let db = try be.tensor([Float](repeating: -1, count: cols), shape: [cols])
    try be.layerNormBackward(try be.tensor(dy, shape: [rows, cols]), x: xt, weight: wt, mean: mean, rstd: rstd,
                             dx: dx, dWeight: dw, dBias: db)
    for (name, e, a, tol) in [("out", ref.out, try be.floats(out), Self.forwardMaxAbs),
                              ("dx", ref.dx, try be.floats(dx), Self.backwardMaxAbs),
                              ("dWeight", ref.dw.map { $0 + 1 }, try be.floats(dw), Self.backwardMaxAbs * 10),
                              ("dBias", ref.db.map { $0 - 1 }, try be.floats(db), Self.backwardMaxAbs * 10)] {
      let worst = zip(e, a).map { abs($0 - Double($1)) }.max() ?? .infinity
      XCTAssertLessThan(worst, tol, name)
    }
  }

  /// The Double chain rule above against central differences of Σ dy ⊙ LayerNorm(x) along a
  /// random direction of x, all in Double (h = 1e-4: truncation and rounding ~1e-8).
  func test_referenceGradient_matchesFiniteDifferences() {
    let (rows, cols) = (3, 11)
    let x = TestData.uniform(rows * cols, seed: 5, -2, 2), w = TestData.uniform(cols, seed: 6, 0.5, 1.5)
    let b = TestData.uniform(cols, seed: 7), dy = TestData.uniform(rows * cols, seed: 8)
    let v = TestData.uniform(rows * cols, seed: 9)
    func loss(_ t: Double) -> Double {
      let xs = zip(x, v).map { Double($0) + t * Double($1) }
      return zip(reference(xs, w, b, dy, rows: rows, cols: cols, eps: 1e-5).out, dy).reduce(0) { $0 + $1.0 * Double($1.1) }
    }
    let h = 1e-4
    let numeric = (loss(h) - loss(-h)) / (2 * h)
    let analytic = zip(reference(x.map { Double($0) }, w, b, dy, rows: rows, cols: cols, eps: 1e-5).dx, v).reduce(0) { $0 + $1.0 * Double($1.1) }
    XCTAssertEqual(numeric, analytic, accuracy: 1e-6 * max(1, abs(analytic)))
  }

  /// Exact GELU (BERT's) and its derivative against the definition in Double (libm erf), the
  /// tanh form against its formula; values span both tails (±8), where x·Φ(x) → 0 and → x.
  func test_activations_matchTheirDefinitions() throws {
    let be = TestBackends.cpu
    let x = TestData.uniform(2001, seed: 11, -8, 8), dy = TestData.uniform(2001, seed: 12)
    func gelu(_ v: Double) -> Double { 0.5 * v * (1 + Foundation.erf(v / 2.0.squareRoot())) }
    func geluPrime(_ v: Double) -> Double {
      0.5 * (1 + Foundation.erf(v / 2.0.squareRoot())) + v * Foundation.exp(-0.5 * v * v) / (2 * Double.pi).squareRoot()
    }
    let xt = try be.tensor(x, shape: [2001]), out = try be.allocate([2001]), dx = try be.allocate([2001])
    try be.activation(.gelu, xt, into: out)
    try be.activationBackward(.gelu, try be.tensor(dy, shape: [2001]), x: xt, into: dx)
    let o = try be.floats(out), d = try be.floats(dx)
    for i in 0..<x.count {
      let v = Double(x[i])
      XCTAssertEqual(Double(o[i]), gelu(v), accuracy: Self.forwardMaxAbs * max(1, abs(v)), "gelu(\(v))")
      XCTAssertEqual(Double(d[i]), Double(dy[i]) * geluPrime(v), accuracy: Self.forwardMaxAbs, "gelu'(\(v))")
    }
    try be.activation(.geluTanh, xt, into: out)
    let t = try be.floats(out)
    for i in 0..<x.count {
      let v = Double(x[i]), z = (2 / Double.pi).squareRoot() * (v + 0.044715 * v * v * v)
      XCTAssertEqual(Double(t[i]), 0.5 * v * (1 + Foundation.tanh(z)), accuracy: Self.forwardMaxAbs * max(1, abs(v)))
    }
    // σ and σ(1 − σ), also far in the tails (x up to ±8 here, ±90 below: no overflow).
    let wide = x + [-90, 90, -30, 30]
    let wt = try be.tensor(wide, shape: [wide.count]), wo = try be.allocate([wide.count]), wd = try be.allocate([wide.count])
    try be.activation(.sigmoid, wt, into: wo)
    try be.activationBackward(.sigmoid, try be.tensor([Float](repeating: 1, count: wide.count), shape: [wide.count]), x: wt,
                              into: wd)
    let so = try be.floats(wo), sd = try be.floats(wd)
    for i in 0..<wide.count {
      let s = 1 / (1 + Foundation.exp(-Double(wide[i])))
      XCTAssertEqual(Double(so[i]), s, accuracy: Self.forwardMaxAbs * max(s, 1e-30) + 1e-30, "σ(\(wide[i]))")
      XCTAssertEqual(Double(sd[i]), s * (1 - s), accuracy: Self.forwardMaxAbs, "σ'(\(wide[i]))")
    }
  }
}
