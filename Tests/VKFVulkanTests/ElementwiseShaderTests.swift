import Foundation
import XCTest
import VKFCore
import VKFCPU
import VKFTestSupport
@testable import VKFVulkan

// Shader unit tests of add.comp, mul.comp, scale.comp, scale_rows.comp and sum_of_squares.comp
// against the CPU backend, plus the helpers every transformer-block shader test shares (`BlockCheck`).

/// Helpers and tolerances shared by the block/elementwise/loss/optimizer shader tests.
enum BlockCheck {
  /// One or two f32 roundings per element (fma or not): relative error ≤ 2⁻²³.
  static let elementwiseNMSE = 1e-12
  static let elementwiseMaxAbs = 1e-6
  /// Kernels calling exp/sin/cos: Vulkan only bounds these to a few ULP (lavapipe's LLVM
  /// polynomials vs CPUMath's Cephes), so a few 1e-7 relative per element.
  static let transcendentalNMSE = 1e-11
  static let transcendentalMaxAbs = 1e-5
  /// Row reductions (tree-shaped f32 on the GPU vs blocked/Double sums on the CPU) feeding a
  /// normalisation: relative error ~ (log₂ 256 + row/256)·2⁻²⁴ ≲ 1e-6 per element.
  static let reductionNMSE = 1e-10
  static let reductionMaxAbs = 1e-5

  /// The Vulkan backend, or a skip (a failure when VKF_REQUIRE_VULKAN=1).
  static func vulkan() throws -> VulkanBackend {
    if let v = TestBackends.vulkan { return v }
    if ProcessInfo.processInfo.environment["VKF_REQUIRE_VULKAN"] == "1" {
      XCTFail("Vulkan required (VKF_REQUIRE_VULKAN=1) but unavailable")
    }
    throw XCTSkip("Vulkan backend unavailable")
  }

  /// Runs `body` on the CPU backend and on Vulkan (same seeded inputs, built inside `body`)
  /// and returns both results; fails when the validation layer reported anything.
  static func both(file: StaticString = #filePath, line: UInt = #line,
                   _ body: (any Backend) throws -> [[Float]]) throws
    -> (cpu: [[Float]], vk: [[Float]])
  {
    let vk = try vulkan()
    vk.clearValidationMessages()
    let cpuOut = try body(TestBackends.cpu)
    let vkOut = try body(vk)
    XCTAssertEqual(vk.validationMessages, [], "validation layer", file: file, line: line)
    return (cpuOut, vkOut)
  }

  /// Asserts each Vulkan output within the limits of the CPU's.
  static func assertClose(_ r: (cpu: [[Float]], vk: [[Float]]), nmse: Double, maxAbs: Double,
                          _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(r.cpu.count, r.vk.count, file: file, line: line)
    for (i, (e, a)) in zip(r.cpu, r.vk).enumerated() {
      if let msg = Compare.check(e, a, nmse: nmse, maxAbs: maxAbs) {
        XCTFail("\(what) output \(i): \(msg)", file: file, line: line)
      }
    }
  }
}

final class ElementwiseShaderTests: XCTestCase {
  func testPushStructs_matchShaderBlocks() {
    XCTAssertEqual(MemoryLayout<BinaryPush>.size, 3 * 4)       // add.comp, mul.comp
    XCTAssertEqual(MemoryLayout<ScalePush>.size, 3 * 4)        // scale.comp (n, alpha, softcap)
    XCTAssertEqual(MemoryLayout<ScaleRowsPush>.size, 2 * 4)    // scale_rows.comp
    XCTAssertEqual(MemoryLayout<SumOfSquaresPush>.size, 2 * 4) // sum_of_squares.comp
    XCTAssertEqual(MemoryLayout<DropoutMaskPush>.size, 5 * 4)  // dropout_mask.comp
  }

  private func binary(_ n: Int, _ nb: Int, seed: UInt64, alpha: Float = 1, inPlace: Bool = false,
                      _ op: @escaping (any Backend, Tensor, Tensor, Tensor) throws -> Void,
                      file: StaticString = #filePath, line: UInt = #line) throws {
    let a = TestData.uniform(n, seed: seed), b = TestData.uniform(nb, seed: seed + 1)
    let r = try BlockCheck.both(file: file, line: line) { be in
      let at = try be.tensor(a, shape: [n / nb, nb]), bt = try be.tensor(b, shape: [nb])
      let out = inPlace ? at : try be.allocate([n / nb, nb])
      try op(be, at, bt, out)
      return [try be.floats(out)]
    }
    BlockCheck.assertClose(r, nmse: BlockCheck.elementwiseNMSE,
                           maxAbs: BlockCheck.elementwiseMaxAbs, "n \(n) nb \(nb)",
                           file: file, line: line)
  }

  func testAdd_sameShapeAndBroadcast_matchesCPU() throws {
    for (n, nb) in [(1, 1), (7, 7), (1000, 1000), (67 * 3, 67), (257 * 4, 257), (1000, 1)] {
      try binary(n, nb, seed: UInt64(n + nb), { try $0.add($1, $2, alpha: -0.75, into: $3) })
    }
  }

  /// dropout_mask.comp draws bit-identical masks to the CPU twin (integer hash only), also in
  /// chunks past one dispatch's element count and with a seed that changes after recording.
  func testDropoutMask_bitIdenticalToCPU() throws {
    for (n, p) in [(1, Float(0.5)), (1000, 0.05), (65_537, 0.3)] {
      let r = try BlockCheck.both { be in
        let seed = try be.tensor(DropoutMask.seedWords(UInt64(n) &* 0x9E37_79B9_7F4A_7C15), shape: [2])
        let mask = try be.allocate([n])
        try be.dropoutMask(seed: seed, stream: 3, p: p, into: mask)
        return [try be.floats(mask)]
      }
      XCTAssertEqual(r.cpu, r.vk, "n \(n) p \(p)")
    }
  }

  func testAdd_inPlace_matchesCPU() throws {
    try binary(67 * 5, 67, seed: 3, inPlace: true, { try $0.add($1, $2, alpha: 2, into: $3) })
  }

  func testMul_sameShapeAndBroadcast_matchesCPU() throws {
    for (n, nb) in [(1, 1), (7, 7), (1000, 1000), (67 * 3, 67), (1000, 1), (300, 3)] {
      try binary(n, nb, seed: UInt64(2 * n + nb), { try $0.mul($1, $2, into: $3) })
    }
  }

  func testScale_oddSizes_matchesCPU() throws {
    for n in [1, 7, 67, 257, 1000] {
      let x = TestData.uniform(n, seed: UInt64(n))
      let r = try BlockCheck.both { be in
        let xt = try be.tensor(x, shape: [n]), out = try be.allocate([n])
        try be.scale(xt, by: 0.3, into: out)
        return [try be.floats(out)]
      }
      BlockCheck.assertClose(r, nmse: BlockCheck.elementwiseNMSE,
                             maxAbs: BlockCheck.elementwiseMaxAbs, "scale n \(n)")
    }
  }

  /// Runs scaleRows on (rows, cols) seeded inputs on both backends, in place or not, and
  /// checks the CPU against w[r]·x[r, c] computed here (one f32 product: exact equality) and
  /// Vulkan against the CPU.
  private func scaleRows(_ rows: Int, _ cols: Int, inPlace: Bool, seed: UInt64,
                         file: StaticString = #filePath, line: UInt = #line) throws {
    let x = TestData.uniform(rows * cols, seed: seed), w = TestData.uniform(rows, seed: seed + 1, -3, 3)
    let r = try BlockCheck.both(file: file, line: line) { be in
      let xt = try be.tensor(x, shape: [rows, cols]), wt = try be.tensor(w, shape: [rows])
      let out = inPlace ? xt : try be.allocate([rows, cols])
      try be.scaleRows(xt, weights: wt, into: out)
      return [try be.floats(out)]
    }
    let expected = (0..<rows * cols).map { w[$0 / cols] * x[$0] }
    XCTAssertEqual(r.cpu[0], expected, "CPU scaleRows \(rows)×\(cols)", file: file, line: line)
    BlockCheck.assertClose(r, nmse: BlockCheck.elementwiseNMSE, maxAbs: BlockCheck.elementwiseMaxAbs,
                           "scaleRows \(rows)×\(cols) inPlace \(inPlace)", file: file, line: line)
  }

  func testScaleRows_oddSizesAndInPlace_matchesCPU() throws {
    for (rows, cols) in [(1, 1), (7, 1), (1, 7), (13, 257), (67, 3), (5, 1000)] {
      for inPlace in [false, true] {
        try scaleRows(rows, cols, inPlace: inPlace, seed: UInt64(rows * 31 + cols))
      }
    }
  }

  /// 64 KiB bindings: (70, 1000) f32 is 280 KB, so scaleRows must run in ≥ 5 row chunks.
  static let scaleRowsBindingLimit = 64 << 10

  func testScaleRows_pastBindingLimit_splitsRowsAndMatchesCPU() throws {
    let vk = try BlockCheck.vulkan()
    vk.bindingLimitForTesting = Self.scaleRowsBindingLimit
    defer { vk.bindingLimitForTesting = nil }
    XCTAssertGreaterThanOrEqual(try vk.rowChunks(rows: 70, rowBytes: 1000 * 4, op: .scaleRows).count, 5)
    try scaleRows(70, 1000, inPlace: true, seed: 41)
    try scaleRows(70, 1000, inPlace: false, seed: 43)
    // One row wider than a binding cannot be split by rows: a clear error, not a bad write.
    let x = try vk.allocate([2, 20_000]), w = try vk.tensor([Float(1), 2], shape: [2])
    XCTAssertThrowsError(try vk.scaleRows(x, weights: w, into: x)) { e in
      XCTAssertTrue("\(e)".contains("binding limit"), "\(e)")
    }
  }

  /// f32 tree sums vs the CPU's Double sums: relative error ≲ (16 + 8 + partials)·2⁻²⁴.
  static let sumOfSquaresRelative: Float = 1e-5

  func testSumOfSquares_accumulatesIntoPrefilledOut() throws {
    // One workgroup (single pass) and several (two passes: partials in scratch).
    for n in [1, 7, 257, 4096, 4097, 70_001] {
      let x = TestData.uniform(n, seed: UInt64(n))
      let r = try BlockCheck.both { be in
        let xt = try be.tensor(x, shape: [n]), out = try be.tensor([Float(2.5)], shape: [1])
        try be.sumOfSquares(xt, into: out)
        return [try be.floats(out)]
      }
      let e = r.cpu[0][0], a = r.vk[0][0]
      XCTAssertEqual(a, e, accuracy: Self.sumOfSquaresRelative * e, "n \(n)")
      let exact = 2.5 + x.reduce(0.0) { $0 + Double($1) * Double($1) }
      XCTAssertEqual(Double(a), exact, accuracy: Double(Self.sumOfSquaresRelative) * exact)
    }
  }

  func testSumOfSquares_twoCallsAccumulate() throws {
    let x = TestData.uniform(5000, seed: 9)
    let r = try BlockCheck.both { be in
      let xt = try be.tensor(x, shape: [5000]), out = try be.tensor([Float(0)], shape: [1])
      try be.sumOfSquares(xt, into: out)
      try be.sumOfSquares(try xt.view(offset: 1000, shape: [7]), into: out)
      return [try be.floats(out)]
    }
    XCTAssertEqual(r.vk[0][0], r.cpu[0][0], accuracy: Self.sumOfSquaresRelative * r.cpu[0][0])
  }
}
