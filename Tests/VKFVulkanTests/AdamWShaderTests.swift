import Foundation
import XCTest
import VKFCore
import VKFCPU
import VKFTestSupport
@testable import VKFVulkan

// Shader unit tests of adam_w.comp against the CPU backend.

final class AdamWShaderTests: XCTestCase {
  /// Each step does a handful of f32 ops per element plus sqrt and a division; over three
  /// steps the moments differ by a few ulp, params (≈ ±1, updates ≈ lr) by far less than lr.
  static let adamNMSE = 1e-12
  static let adamMaxAbs = 1e-6
  /// m/(√v + eps) amplifies relative moment error only through the clip factor (a sqrt of a
  /// tree-summed Σg²): a few 1e-7 relative.
  static let clippedNMSE = 1e-11
  static let clippedMaxAbs = 1e-5

  func testAdamWPush_matchesShaderBlock() {
    XCTAssertEqual(MemoryLayout<AdamWPush>.size, 2 * 4)  // n, hasSumSq
  }

  /// Three AdamW steps; with `maxGradNorm` > 0 the global norm comes from `sumOfSquares`.
  private func check(n: Int, maxGradNorm: Float, passSumOfSquares: Bool, gradScale: Float = 1,
                     seed: UInt64, nmse: Double, maxAbs: Double,
                     file: StaticString = #filePath, line: UInt = #line) throws {
    let p0 = TestData.uniform(n, seed: seed)
    let grads = (0..<3).map { TestData.uniform(n, seed: seed + 10 + UInt64($0), -2, 2) }
    let r = try BlockCheck.both(file: file, line: line) { be in
      let p = try be.tensor(p0, shape: [n])
      let m = try be.tensor([Float](repeating: 0, count: n), shape: [n])
      let v = try be.tensor([Float](repeating: 0, count: n), shape: [n])
      let hyper = try be.allocate([AdamWHyperParameters.count])
      let g = try be.allocate([n]), s = try be.allocate([1])
      for step in 1...3 {
        let h = AdamWHyperParameters(lr: 1e-2, weightDecay: 0.1, step: step, gradScale: gradScale,
                                     maxGradNorm: maxGradNorm)
        try be.upload(h.packed, to: hyper)
        try be.upload(grads[step - 1], to: g)
        try be.fill(s, value: 0)
        if passSumOfSquares { try be.sumOfSquares(g, into: s) }
        try be.adamW(param: p, grad: g, m: m, v: v, hyper: hyper,
                     gradSumOfSquares: passSumOfSquares ? s : nil)
      }
      return [try be.floats(p), try be.floats(m), try be.floats(v)]
    }
    BlockCheck.assertClose(r, nmse: nmse, maxAbs: maxAbs, "adamW n \(n) clip \(maxGradNorm)",
                           file: file, line: line)
  }

  /// A non-finite Σg² (NaN, ±inf; with or without clipping) skips the step on both backends:
  /// param, m and v keep their bits even where the gradient itself is NaN.
  func testAdamW_nonFiniteSumOfSquares_skipsStep() throws {
    let n = 300
    let p0 = TestData.uniform(n, seed: 4), m0 = TestData.uniform(n, seed: 5), v0 = TestData.uniform(n, seed: 6, 0, 1)
    for bad in [Float.nan, .infinity, -.infinity] {
      for maxGradNorm: Float in [0, 1] {
        let r = try BlockCheck.both { be in
          let p = try be.tensor(p0, shape: [n]), m = try be.tensor(m0, shape: [n]), v = try be.tensor(v0, shape: [n])
          var grad = TestData.uniform(n, seed: 7)
          grad[3] = .nan
          let g = try be.tensor(grad, shape: [n])
          let hyper = try be.tensor(AdamWHyperParameters(lr: 1e-2, step: 1, maxGradNorm: maxGradNorm).packed,
                                    shape: [AdamWHyperParameters.count])
          let s = try be.tensor([bad], shape: [1])
          try be.adamW(param: p, grad: g, m: m, v: v, hyper: hyper, gradSumOfSquares: s)
          return [try be.floats(p), try be.floats(m), try be.floats(v)]
        }
        for (what, got) in [("cpu", r.cpu), ("vulkan", r.vk)] {
          XCTAssertEqual(got, [p0, m0, v0], "\(what): S \(bad), maxGradNorm \(maxGradNorm)")
        }
      }
    }
  }

  func testAdamW_threeStepsNoClipping_matchesCPU() throws {
    for n in [1, 7, 1000] {
      try check(n: n, maxGradNorm: 0, passSumOfSquares: false, seed: UInt64(n),
                nmse: Self.adamNMSE, maxAbs: Self.adamMaxAbs)
    }
    try check(n: 67, maxGradNorm: 0, passSumOfSquares: true, gradScale: 0.25, seed: 2,
              nmse: Self.adamNMSE, maxAbs: Self.adamMaxAbs)
  }

  func testAdamW_threeStepsWithClipping_matchesCPU() throws {
    // ‖g‖ ≈ 1.15·√n ≫ 1: clipping active every step.
    try check(n: 1000, maxGradNorm: 1, passSumOfSquares: true, seed: 3,
              nmse: Self.clippedNMSE, maxAbs: Self.clippedMaxAbs)
    // A limit above the norm: clip = 1.
    try check(n: 257, maxGradNorm: 1e4, passSumOfSquares: true, gradScale: 0.5, seed: 4,
              nmse: Self.clippedNMSE, maxAbs: Self.clippedMaxAbs)
  }
}
