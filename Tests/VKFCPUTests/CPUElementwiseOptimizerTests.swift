import Foundation
import VKFCore
import VKFTestSupport
import XCTest

@testable import VKFCPU

final class CPUElementwiseOptimizerTests: XCTestCase {
  func test_add_broadcastsBOverRows() throws {
    let a = TestData.uniform(4 * 7, seed: 80), b = TestData.uniform(7, seed: 81)
    let out = try T.zeros([4, 7])
    try T.cpu.add(try T.f32(a, [4, 7]), try T.f32(b, [7]), alpha: -2, into: out)
    XCTAssertEqual(try T.read(out), (0..<28).map { a[$0] + -2 * b[$0 % 7] })
    try T.cpu.add(try T.f32(a, [4, 7]), try T.f32([3], [1]), alpha: 1, into: out)
    XCTAssertEqual(try T.read(out), a.map { $0 + 3 })
  }

  func test_mulAndScale_elementwise() throws {
    let a = TestData.uniform(100_000, seed: 82), b = TestData.uniform(100_000, seed: 83)
    let ta = try T.f32(a, [100_000]), out = try T.zeros([100_000])
    try T.cpu.mul(ta, try T.f32(b, [100_000]), into: out)
    XCTAssertEqual(try T.read(out), (0..<a.count).map { a[$0] * b[$0] })
    try T.cpu.scale(ta, by: 0.3, into: ta)  // in place
    XCTAssertEqual(try T.read(ta), a.map { 0.3 * $0 })
  }

  /// The mask keeps 1 − p of the elements (within 5σ of a binomial draw) at 1/(1 − p), depends
  /// on seed and stream, and is a pure function of them (the backward pass redraws it).
  func test_dropoutMask_rateScaleAndDeterminism() throws {
    let b = CPUBackend(), n = 200_000, p: Float = 0.1
    let seed = try b.tensor(DropoutMask.seedWords(42), shape: [2])
    let m = try b.allocate([n]), again = try b.allocate([n]), other = try b.allocate([n])
    try b.dropoutMask(seed: seed, stream: 0, p: p, into: m)
    try b.dropoutMask(seed: seed, stream: 0, p: p, into: again)
    try b.dropoutMask(seed: seed, stream: 1, p: p, into: other)
    let v = try b.floats(m)
    XCTAssertEqual(v, try b.floats(again))
    XCTAssertNotEqual(v, try b.floats(other))
    let dropped = Double(v.filter { $0 == 0 }.count)
    let sigma = (Double(n) * Double(p) * Double(1 - p)).squareRoot()
    XCTAssertEqual(dropped, Double(n) * Double(p), accuracy: 5 * sigma)
    XCTAssertTrue(v.allSatisfy { $0 == 0 || $0 == DropoutMask.keepScale(p) })
    try b.upload(DropoutMask.seedWords(43), to: seed)
    try b.dropoutMask(seed: seed, stream: 0, p: p, into: again)
    XCTAssertNotEqual(v, try b.floats(again))
    // p = 0 keeps every element at exactly 1.
    try b.dropoutMask(seed: seed, stream: 0, p: 0, into: again)
    XCTAssertTrue(try b.floats(again).allSatisfy { $0 == 1 })
  }

  func test_sumOfSquares_accumulatesInDouble() throws {
    let x = TestData.uniform(200_001, seed: 84)
    let out = try T.f32([2], [1])
    try T.cpu.sumOfSquares(try T.f32(x, [x.count]), into: out)
    let ref = x.reduce(2.0) { $0 + Double($1) * Double($1) }
    // One f32 rounding of a Double-exact sum: relative 6e-8.
    XCTAssertEqual(Double(try T.read(out)[0]), ref, accuracy: ref * 1.2e-7)
  }

  /// The AdamW step written out in Double from `AdamWHyperParameters`' formula.
  static func adamRef(_ p: inout [Double], _ m: inout [Double], _ v: inout [Double], _ g: [Float],
                      _ hp: AdamWHyperParameters, sumSq: Double?) {
    let t = Double(hp.step)
    let bc1 = 1 - pow(Double(hp.beta1), t), bc2 = 1 - pow(Double(hp.beta2), t)
    var clip = 1.0
    if hp.maxGradNorm > 0, let s = sumSq {
      clip = min(1, Double(hp.maxGradNorm) / (Double(hp.gradScale) * s.squareRoot() + 1e-6))
    }
    for i in 0..<p.count {
      let gi = Double(g[i]) * Double(hp.gradScale) * clip
      p[i] *= 1 - Double(hp.lr) * Double(hp.weightDecay)
      m[i] = Double(hp.beta1) * m[i] + (1 - Double(hp.beta1)) * gi
      v[i] = Double(hp.beta2) * v[i] + (1 - Double(hp.beta2)) * gi * gi
      p[i] -= Double(hp.lr) / bc1 * m[i] / (v[i].squareRoot() / bc2.squareRoot() + Double(hp.eps))
    }
  }

  func test_adamW_threeStepsWithDecayScaleAndClipping_matchDoubleFormula() throws {
    let n = 37
    let p0 = TestData.uniform(n, seed: 85)
    var p = p0.map(Double.init), m = [Double](repeating: 0, count: n), v = m
    let tp = try T.f32(p0, [n]), tm = try T.zeros([n]), tv = try T.zeros([n])
    let hyper = try T.zeros([AdamWHyperParameters.count]), sumSq = try T.zeros([1])
    for step in 1...3 {
      let g = TestData.uniform(n, seed: 90 + UInt64(step), -3, 3)
      // Step 2 does not clip (norm below the limit); steps 1 and 3 do.
      let hp = AdamWHyperParameters(lr: 1e-2, weightDecay: 0.1, step: step, gradScale: 0.5,
                                    maxGradNorm: step == 2 ? 100 : 1)
      let tg = try T.f32(g, [n])
      try T.cpu.fill(sumSq, value: 0)
      try T.cpu.sumOfSquares(tg, into: sumSq)
      try T.cpu.upload(hp.packed, to: hyper)
      try T.cpu.adamW(param: tp, grad: tg, m: tm, v: tv, hyper: hyper, gradSumOfSquares: sumSq)
      Self.adamRef(&p, &m, &v, g, hp, sumSq: g.reduce(0) { $0 + Double($1) * Double($1) })
    }
    T.assertClose(p.map(Float.init), try T.read(tp), nmse: 1e-12, maxAbs: Tol.adamMaxAbs, "param")
    T.assertClose(m.map(Float.init), try T.read(tm), nmse: 1e-10, maxAbs: Tol.adamMaxAbs, "m")
    T.assertClose(v.map(Float.init), try T.read(tv), nmse: 1e-10, maxAbs: Tol.adamMaxAbs, "v")
  }

  func test_adamW_clippingWithoutSumOfSquaresThrows() throws {
    let p = try T.zeros([3]), hyper = try T.f32(AdamWHyperParameters(lr: 1, maxGradNorm: 1).packed,
                                                [AdamWHyperParameters.count])
    XCTAssertThrowsError(try T.cpu.adamW(param: p, grad: try T.zeros([3]), m: try T.zeros([3]),
                                         v: try T.zeros([3]), hyper: hyper, gradSumOfSquares: nil))
  }
}
