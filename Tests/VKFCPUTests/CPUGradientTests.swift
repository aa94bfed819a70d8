import VKFCore
import VKFTestSupport
import XCTest

@testable import VKFCPU

/// Every backward op against central differences of L = Σ forward(x)⊙R, R fixed and random.
final class CPUGradientTests: XCTestCase {
  /// Finite-difference step: large enough that f32 rounding of L (~1e-7·|L|) stays ≪ h·|∂L|,
  /// small enough that the O(h²) truncation of smooth ops is ≈1e-4.
  static let h: Float = 1e-2
  /// Coordinates checked per tensor: enough to catch an indexing bug, quick in debug builds.
  static let samples = 40

  func test_rmsNormBackward_matchesFiniteDifferences() throws {
    let (rows, C, eps): (Int, Int, Float) = (3, 24, 1e-5)
    let x = TestData.uniform(rows * C, seed: 60, -2, 2), w = TestData.uniform(C, seed: 61, 0.5, 1.5)
    let r = TestData.uniform(rows * C, seed: 62)
    func loss(_ x: [Float], _ w: [Float]) throws -> Double {
      let out = try T.zeros([rows, C]), rstd = try T.zeros([rows])
      try T.cpu.rmsNorm(try T.f32(x, [rows, C]), weight: try T.f32(w, [C]), eps: eps, into: out, rstd: rstd)
      return T.dot(try T.read(out), r)
    }
    let tx = try T.f32(x, [rows, C]), tw = try T.f32(w, [C])
    let out = try T.zeros([rows, C]), rstd = try T.zeros([rows])
    try T.cpu.rmsNorm(tx, weight: tw, eps: eps, into: out, rstd: rstd)
    let dx = try T.zeros([rows, C])
    let dw = try T.f32([Float](repeating: 0.25, count: C), [C])  // accumulates onto 0.25
    try T.cpu.rmsNormBackward(try T.f32(r, [rows, C]), x: tx, weight: tw, rstd: rstd, dx: dx, dWeight: dw)
    let at = T.sample(x.count, Self.samples)
    let numX = try T.numericGradient(x, at: at, h: Self.h) { try loss($0, w) }
    let gotX = try T.read(dx)
    T.assertClose(numX, at.map { gotX[$0] }, nmse: Tol.gradNMSE, maxAbs: Tol.gradMaxAbs, "dx")
    let numW = try T.numericGradient(w, at: Array(0..<C), h: Self.h) { try loss(x, $0) }
    T.assertClose(numW, try T.read(dw).map { $0 - 0.25 }, nmse: Tol.gradNMSE,
                  maxAbs: Tol.gradMaxAbs, "dWeight")
  }

  func test_rmsNormBackward_parallelPartialsEqualSerialSum() throws {
    // 600 rows × 64 is above the parallel threshold: dWeight is summed from two partials.
    let (rows, C) = (600, 64)
    let x = try T.f32(TestData.uniform(rows * C, seed: 63), [rows, C])
    let dy = TestData.uniform(rows * C, seed: 64)
    let w = try T.f32(TestData.uniform(C, seed: 65), [C])
    let out = try T.zeros([rows, C]), rstd = try T.zeros([rows])
    try T.cpu.rmsNorm(x, weight: w, eps: 1e-5, into: out, rstd: rstd)
    let dx = try T.zeros([rows, C]), dw = try T.zeros([C])
    try T.cpu.rmsNormBackward(try T.f32(dy, [rows, C]), x: x, weight: w, rstd: rstd, dx: dx, dWeight: dw)
    let xs = try T.read(x), rs = try T.read(rstd)
    var ref = [Double](repeating: 0, count: C)
    for r in 0..<rows { for j in 0..<C { ref[j] += Double(dy[r * C + j]) * Double(xs[r * C + j]) * Double(rs[r]) } }
    T.assertClose(ref.map(Float.init), try T.read(dw), nmse: Tol.f32NMSE, maxAbs: 1e-4, "dWeight")
  }

  func test_ropeBackward_matchesFiniteDifferences() throws {
    let (tokens, heads, HS) = (3, 2, 8)
    let shape = [tokens, heads, HS]
    let x = TestData.uniform(tokens * heads * HS, seed: 66), r = TestData.uniform(x.count, seed: 67)
    let pos = try T.i32([5, 0, 31], [tokens])
    let inv = try T.f32(RoPE.inverseFrequencies(headDim: HS, theta: 10_000), [HS / 2])
    let dx = try T.zeros(shape)
    try T.cpu.ropeBackward(try T.f32(r, shape), positions: pos, invFreq: inv, into: dx)
    let num = try T.numericGradient(x, at: Array(0..<x.count), h: Self.h) { xv in
      let out = try T.zeros(shape)
      try T.cpu.rope(try T.f32(xv, shape), positions: pos, invFreq: inv, into: out)
      return T.dot(try T.read(out), r)
    }
    T.assertClose(num, try T.read(dx), nmse: Tol.gradNMSE, maxAbs: Tol.gradMaxAbs, "dx")
  }

  func test_causalSoftmaxBackward_matchesFiniteDifferences() throws {
    let (heads, tq, tk, scale): (Int, Int, Int, Float) = (2, 3, 5, 0.8)
    let shape = [heads, tq, tk]
    let x = TestData.uniform(heads * tq * tk, seed: 68, -2, 2), r = TestData.uniform(x.count, seed: 69)
    let y = try T.zeros(shape), dx = try T.zeros(shape)
    try T.cpu.causalSoftmax(try T.f32(x, shape), scale: scale, into: y)
    try T.cpu.causalSoftmaxBackward(try T.f32(r, shape), out: y, scale: scale, into: dx)
    let num = try T.numericGradient(x, at: Array(0..<x.count), h: Self.h) { xv in
      let out = try T.zeros(shape)
      try T.cpu.causalSoftmax(try T.f32(xv, shape), scale: scale, into: out)
      return T.dot(try T.read(out), r)
    }
    T.assertClose(num, try T.read(dx), nmse: Tol.gradNMSE, maxAbs: Tol.gradMaxAbs, "dx")
  }

  func test_swigluBackward_matchesFiniteDifferences() throws {
    let n = 50
    let g = TestData.uniform(n, seed: 70, -4, 4), u = TestData.uniform(n, seed: 71, -2, 2)
    let r = TestData.uniform(n, seed: 72)
    let dg = try T.zeros([n]), du = try T.zeros([n])
    try T.cpu.swigluBackward(try T.f32(r, [n]), gate: try T.f32(g, [n]), up: try T.f32(u, [n]),
                             dGate: dg, dUp: du)
    func loss(_ g: [Float], _ u: [Float]) throws -> Double {
      let out = try T.zeros([n])
      try T.cpu.swiglu(gate: try T.f32(g, [n]), up: try T.f32(u, [n]), into: out)
      return T.dot(try T.read(out), r)
    }
    let numG = try T.numericGradient(g, at: Array(0..<n), h: Self.h) { try loss($0, u) }
    let numU = try T.numericGradient(u, at: Array(0..<n), h: Self.h) { try loss(g, $0) }
    T.assertClose(numG, try T.read(dg), nmse: Tol.gradNMSE, maxAbs: Tol.gradMaxAbs, "dGate")
    T.assertClose(numU, try T.read(du), nmse: Tol.gradNMSE, maxAbs: Tol.gradMaxAbs, "dUp")
  }

  func test_gegluBackward_matchesFiniteDifferences() throws {
    let n = 50
    let g = TestData.uniform(n, seed: 75, -4, 4), u = TestData.uniform(n, seed: 76, -2, 2)
    let r = TestData.uniform(n, seed: 77)
    let dg = try T.zeros([n]), du = try T.zeros([n])
    try T.cpu.gatedActivationBackward(.geluTanh, try T.f32(r, [n]), gate: try T.f32(g, [n]), up: try T.f32(u, [n]),
                                      dGate: dg, dUp: du)
    func loss(_ g: [Float], _ u: [Float]) throws -> Double {
      let out = try T.zeros([n])
      try T.cpu.gatedActivation(.geluTanh, gate: try T.f32(g, [n]), up: try T.f32(u, [n]), into: out)
      return T.dot(try T.read(out), r)
    }
    let numG = try T.numericGradient(g, at: Array(0..<n), h: Self.h) { try loss($0, u) }
    let numU = try T.numericGradient(u, at: Array(0..<n), h: Self.h) { try loss(g, $0) }
    T.assertClose(numG, try T.read(dg), nmse: Tol.gradNMSE, maxAbs: Tol.gradMaxAbs, "dGate")
    T.assertClose(numU, try T.read(du), nmse: Tol.gradNMSE, maxAbs: Tol.gradMaxAbs, "dUp")
  }

  func test_embeddingBackward_matchesFiniteDifferences() throws {
    let (V, C) = (6, 4)
    let ids = try T.i32([1, 4, 1, 0, 5], [5])
    let table = TestData.uniform(V * C, seed: 73), r = TestData.uniform(5 * C, seed: 74)
    let dTable = try T.zeros([V, C])
    try T.cpu.embeddingBackward(ids: ids, dOut: try T.f32(r, [5, C]), dTable: dTable)
    let num = try T.numericGradient(table, at: Array(0..<table.count), h: Self.h) { tv in
      let out = try T.zeros([5, C])
      try T.cpu.embedding(ids: ids, table: try T.f32(tv, [V, C]), into: out)
      return T.dot(try T.read(out), r)
    }
    T.assertClose(num, try T.read(dTable), nmse: Tol.gradNMSE, maxAbs: Tol.gradMaxAbs, "dTable")
  }

  func test_crossEntropyGradient_matchesFiniteDifferences() throws {
    let (n, V) = (4, 9)
    let x = TestData.uniform(n * V, seed: 75, -3, 3)
    let targets = try T.i32([2, -100, 8, 0], [n])
    let losses = try T.zeros([n]), d = try T.zeros([n, V])
    try T.cpu.crossEntropy(logits: try T.f32(x, [n, V]), targets: targets, ignoreIndex: -100,
                           normalizer: nil, losses: losses, dLogits: d)
    let num = try T.numericGradient(x, at: Array(0..<x.count), h: Self.h) { xv in
      let l = try T.zeros([n])
      try T.cpu.crossEntropy(logits: try T.f32(xv, [n, V]), targets: targets, ignoreIndex: -100,
                             normalizer: nil, losses: l, dLogits: nil)
      return try T.read(l).reduce(0) { $0 + Double($1) }
    }
    T.assertClose(num, try T.read(d), nmse: Tol.gradNMSE, maxAbs: Tol.gradMaxAbs, "dLogits")
  }
}
