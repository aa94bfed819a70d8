import XCTest
@testable import VKFVulkan
import VKFCore
import VKFTestSupport

/// Ops whose tensors exceed one binding (the LM head's logits past lavapipe's 128 MiB) split
/// into products and row chunks that fit. The device's limit is lowered to 64 KiB here so
/// the split runs on small inputs; results must equal the CPU's.
final class ChunkingTests: XCTestCase {
  /// 64 KiB: every case below needs 2–8 chunks.
  static let testBindingLimit = 64 << 10
  /// Products with k ≤ 512 summed in another order (and across k-chunks through β).
  static let matmulNMSE = 1e-10, matmulMaxAbs = 2e-4
  /// Row reductions over ≤ 1000 terms.
  static let rowNMSE = 1e-10, rowMaxAbs = 1e-5

  var vk: VulkanBackend!
  let cpu = TestBackends.cpu

  override func setUpWithError() throws {
    guard let b = TestBackends.vulkan else {
      if ProcessInfo.processInfo.environment["VKF_REQUIRE_VULKAN"] == "1" { XCTFail("no Vulkan backend") }
      throw XCTSkip("no Vulkan device")
    }
    vk = b
    vk.bindingLimitForTesting = Self.testBindingLimit
  }

  override func tearDown() {
    vk?.bindingLimitForTesting = nil
    if let vk { XCTAssertEqual(vk.validationMessages, []); vk.clearValidationMessages() }
  }

  /// Runs `body` on both backends with the same seeded inputs and compares the outputs.
  func compare(_ what: String, nmse: Double, maxAbs: Double, _ body: (Backend) throws -> [Tensor]) throws {
    let e = try body(cpu).map { try cpu.floats($0) }
    let a = try body(vk).map { try vk.floats($0) }
    for (i, (x, y)) in zip(e, a).enumerated() {
      if let why = Compare.check(x, y, nmse: nmse, maxAbs: maxAbs) { XCTFail("\(what) output \(i): \(why)") }
    }
  }

  func rand(_ b: Backend, _ shape: [Int], _ seed: UInt64) throws -> Tensor {
    try b.tensor(TestData.uniform(shape.reduce(1, *), seed: seed), shape: shape)
  }

  func test_lmHeadProducts_splitWhenLogitsExceedBindingLimit() throws {
    let (n, v, c) = (96, 500, 24)  // logits 192 KB = 3 bindings; E 48 KB fits, as in SmolLM2
    try compare("logits = x·Eᵀ (split over m)", nmse: Self.matmulNMSE, maxAbs: Self.matmulMaxAbs) { b in
      let x = try rand(b, [n, c], 1), e = try rand(b, [v, c], 2), out = try b.allocate([n, v])
      try b.matmul(x, e, into: out, transposeB: true)
      return [out]
    }
    try compare("dx = dL·E (split over m)", nmse: Self.matmulNMSE, maxAbs: Self.matmulMaxAbs) { b in
      let dl = try rand(b, [n, v], 3), e = try rand(b, [v, c], 4), dx = try rand(b, [n, c], 5)
      try b.matmul(dl, e, into: dx, transposeA: false, transposeB: false, alpha: 0.5, beta: 1)
      return [dx]
    }
    try compare("dE = dLᵀ·x (split over k, accumulated)", nmse: Self.matmulNMSE, maxAbs: Self.matmulMaxAbs) { b in
      let dl = try rand(b, [n, v], 6), x = try rand(b, [n, c], 7), de = try rand(b, [v, c], 8)
      try b.matmul(dl, x, into: de, transposeA: true, transposeB: false, alpha: 1, beta: 0.25)
      return [de]
    }
  }

  func test_unsplittableLayout_throwsClearly() throws {
    // C (n, m)ᵀ-shaped: A transposed and B transposed with an oversized B.
    let a = try vk.allocate([8, 4]), b = try vk.allocate([20_000, 8]), c = try vk.allocate([4, 20_000])
    XCTAssertThrowsError(try vk.matmul(a, b, into: c, transposeA: true, transposeB: true)) { e in
      XCTAssertTrue("\(e)".contains("binding limit"), "\(e)")
    }
  }

  func test_crossEntropy_splitsRowsAndKeepsGlobalNormalizer() throws {
    try compare("crossEntropy", nmse: Self.rowNMSE, maxAbs: Self.rowMaxAbs) { b in
      let (n, v) = (70, 1000)  // 280 KB of logits
      let logits = try rand(b, [n, v], 9)
      var t = TestData.ints(n, seed: 10, upper: Int32(v)); t[0] = -100; t[69] = -100
      let losses = try b.allocate([n]), d = try b.allocate([n, v])
      try b.crossEntropy(logits: logits, targets: try b.tensor(t, shape: [n]), ignoreIndex: -100,
                         normalizer: nil, losses: losses, dLogits: d)
      return [losses, d]
    }
  }

  func test_causalSoftmax_splitsWholeMatrices() throws {
    try compare("causalSoftmax fwd/back", nmse: Self.rowNMSE, maxAbs: Self.rowMaxAbs) { b in
      let shape = [12, 30, 90]  // 130 KB; chunks of whole 30×90 matrices
      let x = try rand(b, shape, 11), y = try b.allocate(shape)
      try b.causalSoftmax(x, scale: 0.5, into: y)
      let dy = try rand(b, shape, 12), dx = try b.allocate(shape)
      try b.causalSoftmaxBackward(dy, out: y, scale: 0.5, into: dx)
      return [y, dx]
    }
  }
}
