import Foundation
import VKFCore
import VKFTestSupport
import XCTest

@testable import VKFCPU

/// Forward ops of the transformer blocks against naive Double references.
final class CPUBlockTests: XCTestCase {
  func test_exp_matchesLibmAcrossTheRange() {
    var worst: Float = 0
    var x: Float = -87
    while x < 88.5 {
      let e = CPUMath.exp(x), r = Float(Foundation.exp(Double(x)))
      worst = max(worst, abs(e - r) / r)
      x += 0.0137
    }
    XCTAssertLessThanOrEqual(worst, Tol.expRelative)
    XCTAssertEqual(CPUMath.exp(-.infinity), 0)
    XCTAssertEqual(CPUMath.exp(-100), 0)
    XCTAssertEqual(CPUMath.exp(100), .infinity)
    XCTAssertTrue(CPUMath.exp(.nan).isNaN)
    XCTAssertEqual(CPUMath.exp(0), 1)
  }

  func test_rmsNorm_matchesNaive() throws {
    let (rows, C, eps): (Int, Int, Float) = (7, 133, 1e-5)
    let x = TestData.uniform(rows * C, seed: 40, -2, 2), w = TestData.uniform(C, seed: 41)
    let out = try T.zeros([rows, C]), rstd = try T.zeros([rows])
    try T.cpu.rmsNorm(try T.f32(x, [rows, C]), weight: try T.f32(w, [C]), eps: eps, into: out, rstd: rstd)
    var ref = [Float](), refR = [Float]()
    for r in 0..<rows {
      let row = x[(r * C)..<((r + 1) * C)].map(Double.init)
      let s = 1 / (row.reduce(0) { $0 + $1 * $1 } / Double(C) + Double(eps)).squareRoot()
      refR.append(Float(s))
      for j in 0..<C { ref.append(Float(row[j] * s * Double(w[j]))) }
    }
    T.assertClose(ref, try T.read(out), nmse: Tol.f32NMSE, maxAbs: Tol.f32MaxAbs, "out")
    T.assertClose(refR, try T.read(rstd), nmse: Tol.f32NMSE, maxAbs: Tol.f32MaxAbs, "rstd")
  }

  func test_rmsNorm_bigInputTakesParallelPathAndMatchesSmall() throws {
    // 512 rows × 300: above the parallel threshold; each row must equal its single-row run.
    let (rows, C) = (512, 300)
    let x = TestData.uniform(rows * C, seed: 42), w = TestData.uniform(C, seed: 43)
    let out = try T.zeros([rows, C]), rstd = try T.zeros([rows])
    let tw = try T.f32(w, [C])
    try T.cpu.rmsNorm(try T.f32(x, [rows, C]), weight: tw, eps: 1e-6, into: out, rstd: rstd)
    let all = try T.read(out)
    for r in [0, 255, 256, 511] {
      let o1 = try T.zeros([1, C]), r1 = try T.zeros([1])
      try T.cpu.rmsNorm(try T.f32(Array(x[(r * C)..<((r + 1) * C)]), [1, C]), weight: tw,
                        eps: 1e-6, into: o1, rstd: r1)
      XCTAssertEqual(Array(all[(r * C)..<((r + 1) * C)]), try T.read(o1), "row \(r)")
    }
  }

  func test_rope_matchesRotateHalfFormula() throws {
    let (tokens, heads, HS) = (5, 3, 8)
    let x = TestData.uniform(tokens * heads * HS, seed: 44)
    let pos: [Int32] = [0, 1, 7, 100, 4095]
    let inv = RoPE.inverseFrequencies(headDim: HS, theta: 10_000)
    let out = try T.zeros([tokens, heads, HS])
    try T.cpu.rope(try T.f32(x, [tokens, heads, HS]), positions: try T.i32(pos, [tokens]),
                   invFreq: try T.f32(inv, [HS / 2]), into: out)
    var ref = [Float](repeating: 0, count: x.count)
    for t in 0..<tokens {
      for h in 0..<heads {
        let base = (t * heads + h) * HS
        for i in 0..<(HS / 2) {
          let angle = Double(Float(pos[t]) * inv[i])  // f32 product, as transformers
          let c = cos(angle), s = sin(angle)
          let a = Double(x[base + i]), b = Double(x[base + i + HS / 2])
          ref[base + i] = Float(a * c - b * s)
          ref[base + i + HS / 2] = Float(b * c + a * s)
        }
      }
    }
    T.assertClose(ref, try T.read(out), nmse: Tol.f32NMSE, maxAbs: Tol.f32MaxAbs, "rope")
  }

  func test_ropeBackward_undoesRope() throws {
    let (tokens, heads, HS) = (4, 2, 6)
    let x = TestData.uniform(tokens * heads * HS, seed: 45)
    let pos = try T.i32([3, 1, 4, 1], [tokens])
    let inv = try T.f32(RoPE.inverseFrequencies(headDim: HS, theta: 500_000), [HS / 2])
    let y = try T.zeros([tokens, heads, HS]), back = try T.zeros([tokens, heads, HS])
    try T.cpu.rope(try T.f32(x, [tokens, heads, HS]), positions: pos, invFreq: inv, into: y)
    try T.cpu.ropeBackward(y, positions: pos, invFreq: inv, into: back)
    T.assertClose(x, try T.read(back), nmse: Tol.f32NMSE, maxAbs: Tol.f32MaxAbs, "inverse")
  }

  /// Naive causal softmax in Double over x (…, tq, tk).
  static func softmaxRef(_ x: [Float], tq: Int, tk: Int, scale: Float) -> [Float] {
    var out = [Float](repeating: 0, count: x.count)
    for r in 0..<(x.count / tk) {
      let visible = r % tq + (tk - tq) + 1
      let row = (0..<visible).map { Double(scale) * Double(x[r * tk + $0]) }
      let m = row.max()!
      let e = row.map { exp($0 - m) }
      let s = e.reduce(0, +)
      for j in 0..<visible { out[r * tk + j] = Float(e[j] / s) }
    }
    return out
  }

  func test_causalSoftmax_matchesNaiveAndMasksExactlyZero() throws {
    for (tq, tk) in [(5, 5), (3, 7), (1, 33)] {
      let batch = 2, heads = 3
      let x = TestData.uniform(batch * heads * tq * tk, seed: 46, -8, 8)
      let out = try T.f32([Float](repeating: .nan, count: x.count), [batch, heads, tq, tk])
      try T.cpu.causalSoftmax(try T.f32(x, [batch, heads, tq, tk]), scale: 0.7, into: out)
      let got = try T.read(out)
      T.assertClose(Self.softmaxRef(x, tq: tq, tk: tk, scale: 0.7), got, nmse: Tol.f32NMSE,
                    maxAbs: Tol.f32MaxAbs, "tq \(tq) tk \(tk)")
      for r in 0..<(x.count / tk) {
        for j in (r % tq + tk - tq + 1)..<tk { XCTAssertEqual(got[r * tk + j], 0) }
      }
    }
  }

  func test_causalSoftmax_hugeLogitsStayFinite() throws {
    let x: [Float] = [1e30, 1e30, -1e30, 3e38]
    let out = try T.zeros([1, 4])
    try T.cpu.causalSoftmax(try T.f32(x, [1, 4]), scale: 1, into: out)
    XCTAssertEqual(try T.read(out), [0, 0, 0, 1])
  }

  func test_swiglu_matchesNaive() throws {
    let g = TestData.uniform(301, seed: 47, -12, 12), u = TestData.uniform(301, seed: 48)
    let out = try T.zeros([301])
    try T.cpu.swiglu(gate: try T.f32(g, [301]), up: try T.f32(u, [301]), into: out)
    let ref = (0..<301).map { i -> Float in
      let gd = Double(g[i])
      return Float(gd / (1 + exp(-gd)) * Double(u[i]))
    }
    T.assertClose(ref, try T.read(out), nmse: Tol.f32NMSE, maxAbs: Tol.f32MaxAbs, "swiglu")
  }

  /// GeGLU against PyTorch's tanh-approximated GELU formula in Double.
  func test_geglu_matchesNaive() throws {
    let g = TestData.uniform(301, seed: 49, -12, 12), u = TestData.uniform(301, seed: 50)
    let out = try T.zeros([301])
    try T.cpu.gatedActivation(.geluTanh, gate: try T.f32(g, [301]), up: try T.f32(u, [301]), into: out)
    let ref = (0..<301).map { i -> Float in
      let x = Double(g[i])
      return Float(0.5 * x * (1 + tanh((2 / Double.pi).squareRoot() * (x + 0.044715 * x * x * x))) * Double(u[i]))
    }
    T.assertClose(ref, try T.read(out), nmse: Tol.f32NMSE, maxAbs: Tol.f32MaxAbs, "geglu")
  }

  /// Gemma's RMSNorm, (1 + w): the offset equals a weight shifted by it, in the output, dx
  /// and dWeight (the gradient of w is that of 1 + w).
  func test_rmsNorm_weightOffset_equalsShiftedWeight() throws {
    let (rows, cols) = (5, 37)
    let x = TestData.uniform(rows * cols, seed: 51, -2, 2), w = TestData.uniform(cols, seed: 52, -0.5, 0.5)
    let dy = TestData.uniform(rows * cols, seed: 53)
    func run(_ weight: [Float], offset: Float) throws -> [[Float]] {
      let out = try T.zeros([rows, cols]), rstd = try T.zeros([rows]), dx = try T.zeros([rows, cols])
      let dw = try T.zeros([cols]), wt = try T.f32(weight, [cols]), xt = try T.f32(x, [rows, cols])
      try T.cpu.rmsNorm(xt, weight: wt, weightOffset: offset, eps: 1e-6, into: out, rstd: rstd)
      try T.cpu.rmsNormBackward(try T.f32(dy, [rows, cols]), x: xt, weight: wt, weightOffset: offset, rstd: rstd,
                                dx: dx, dWeight: dw)
      return [try T.read(out), try T.read(dx), try T.read(dw)]
    }
    let a = try run(w, offset: 1), b = try run(w.map { $0 + 1 }, offset: 0)
    for (name, x, y) in zip3(["out", "dx", "dWeight"], a, b) {
      T.assertClose(y, x, nmse: Tol.f32NMSE, maxAbs: Tol.f32MaxAbs, name)
    }
  }

  private func zip3<A, B, C>(_ a: [A], _ b: [B], _ c: [C]) -> [(A, B, C)] {
    zip(a, zip(b, c)).map { ($0, $1.0, $1.1) }
  }

  func test_embedding_gathersRows() throws {
    let (V, C) = (10, 3)
    let table = (0..<(V * C)).map(Float.init)
    let out = try T.zeros([2, 2, C])
    try T.cpu.embedding(ids: try T.i32([9, 0, 4, 9], [2, 2]), table: try T.f32(table, [V, C]), into: out)
    XCTAssertEqual(try T.read(out), [27, 28, 29, 0, 1, 2, 12, 13, 14, 27, 28, 29])
  }

  func test_embeddingBackward_accumulatesRepeatedIds() throws {
    let dTable = try T.f32([Float](repeating: 1, count: 12), [4, 3])
    let dOut = try T.f32([1, 2, 3, 10, 20, 30, 100, 200, 300], [3, 3])
    try T.cpu.embeddingBackward(ids: try T.i32([2, 0, 2], [3]), dOut: dOut, dTable: dTable)
    XCTAssertEqual(try T.read(dTable), [11, 21, 31, 1, 1, 1, 102, 203, 304, 1, 1, 1])
  }

  /// Naive cross-entropy in Double: (losses, dLogits); with `softcap` over cap·tanh(x / cap),
  /// the gradient w.r.t. the uncapped x.
  static func crossEntropyRef(_ x: [Float], _ t: [Int32], vocab V: Int, ignore: Int32,
                              normalizer: Double, softcap: Double = 0) -> ([Float], [Float]) {
    var losses = [Float](repeating: 0, count: t.count), d = [Float](repeating: 0, count: x.count)
    for r in 0..<t.count where t[r] != ignore {
      let row = (0..<V).map { softcap > 0 ? softcap * tanh(Double(x[r * V + $0]) / softcap) : Double(x[r * V + $0]) }
      let m = row.max()!, s = row.reduce(0) { $0 + exp($1 - m) }
      losses[r] = Float((log(s) + m - row[Int(t[r])]) / normalizer)
      for j in 0..<V {
        let u = softcap > 0 ? row[j] / softcap : 0
        d[r * V + j] = Float((exp(row[j] - m) / s - (j == Int(t[r]) ? 1 : 0)) / normalizer * (1 - u * u))
      }
    }
    return (losses, d)
  }

  /// Gemma 2's soft-capped logits (cap 3 on logits of ±6: well into the tanh's bend), with
  /// the gradient written over the logits, and the capped `scale` against the formula.
  func test_crossEntropy_softcap_matchesNaive_inPlace() throws {
    let (n, V) = (5, 131)
    let x = TestData.uniform(n * V, seed: 53, -6, 6)
    let t: [Int32] = [3, -100, 130, 0, 17]
    let logits = try T.f32(x, [n, V]), losses = try T.zeros([n])
    try T.cpu.crossEntropy(logits: logits, targets: try T.i32(t, [n]), ignoreIndex: -100,
                           normalizer: .targetCount, softcap: 3, losses: losses, dLogits: logits)
    let (rl, rd) = Self.crossEntropyRef(x, t, vocab: V, ignore: -100, normalizer: 4, softcap: 3)
    T.assertClose(rl, try T.read(losses), nmse: Tol.f32NMSE, maxAbs: Tol.f32MaxAbs, "losses")
    T.assertClose(rd, try T.read(logits), nmse: Tol.f32NMSE, maxAbs: Tol.f32MaxAbs, "dLogits")
    let capped = try T.zeros([n, V])
    try T.cpu.scale(try T.f32(x, [n, V]), by: 0.5, softcap: 2, into: capped)
    T.assertClose(x.map { Float(2 * tanh(0.5 * Double($0) / 2)) }, try T.read(capped),
                  nmse: Tol.f32NMSE, maxAbs: Tol.f32MaxAbs, "scale with softcap")
  }

  func test_crossEntropy_matchesNaiveWithIgnoredRows() throws {
    let (n, V) = (6, 257)
    let x = TestData.uniform(n * V, seed: 49, -6, 6)
    let t: [Int32] = [3, -100, 256, 0, -100, 17]
    for normalizer in [nil, Float(10)] as [Float?] {
      let losses = try T.zeros([n]), d = try T.f32([Float](repeating: .nan, count: n * V), [n, V])
      try T.cpu.crossEntropy(logits: try T.f32(x, [n, V]), targets: try T.i32(t, [n]),
                             ignoreIndex: -100, normalizer: normalizer, losses: losses, dLogits: d)
      let (rl, rd) = Self.crossEntropyRef(x, t, vocab: V, ignore: -100,
                                          normalizer: Double(normalizer ?? 4))
      T.assertClose(rl, try T.read(losses), nmse: Tol.f32NMSE, maxAbs: Tol.f32MaxAbs, "losses")
      T.assertClose(rd, try T.read(d), nmse: Tol.f32NMSE, maxAbs: Tol.f32MaxAbs, "dLogits")
      // Without dLogits the loss takes the buffer-free path and must agree.
      let l2 = try T.zeros([n])
      try T.cpu.crossEntropy(logits: try T.f32(x, [n, V]), targets: try T.i32(t, [n]),
                             ignoreIndex: -100, normalizer: normalizer, losses: l2, dLogits: nil)
      T.assertClose(rl, try T.read(l2), nmse: Tol.f32NMSE, maxAbs: Tol.f32MaxAbs, "no dLogits")
    }
  }

  func test_crossEntropy_allIgnored_givesZeros() throws {
    let losses = try T.f32([5, 5], [2]), d = try T.f32([Float](repeating: 5, count: 6), [2, 3])
    try T.cpu.crossEntropy(logits: try T.f32(TestData.uniform(6, seed: 50), [2, 3]),
                           targets: try T.i32([-1, -1], [2]), ignoreIndex: -1, normalizer: nil,
                           losses: losses, dLogits: d)
    XCTAssertEqual(try T.read(losses), [0, 0])
    XCTAssertEqual(try T.read(d), [Float](repeating: 0, count: 6))
  }

  func test_crossEntropy_inPlaceGradientOverLogits() throws {
    let (n, V) = (3, 50)
    let x = TestData.uniform(n * V, seed: 51, -3, 3), t: [Int32] = [1, 49, 0]
    let logits = try T.f32(x, [n, V]), losses = try T.zeros([n])
    try T.cpu.crossEntropy(logits: logits, targets: try T.i32(t, [n]), ignoreIndex: -100,
                           normalizer: nil, losses: losses, dLogits: logits)
    let (rl, rd) = Self.crossEntropyRef(x, t, vocab: V, ignore: -100, normalizer: 3)
    T.assertClose(rl, try T.read(losses), nmse: Tol.f32NMSE, maxAbs: Tol.f32MaxAbs, "losses")
    T.assertClose(rd, try T.read(logits), nmse: Tol.f32NMSE, maxAbs: Tol.f32MaxAbs, "dLogits")
  }
}
