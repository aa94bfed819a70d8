import Foundation
import XCTest
import VKFCore
import VKFCPU
import VKFTestSupport
@testable import VKFVulkan

// Shader unit tests of matmul.comp against the CPU backend (OpenBLAS) and a Double reference.

/// Tolerances and helpers shared by the linear-algebra shader tests (Matmul/NF4/LoRA).
enum LinearCheck {
  /// f32 dot products of k terms in [-1, 1]: per-element relative error ~ √k·2⁻²⁴ ≈ 1e-6 at
  /// k ≈ 300, so NMSE ~ 1e-12; 1e-10 leaves 100× margin for different summation orders
  /// (tiled K loop vs OpenBLAS kernels) while any indexing bug gives NMSE ≳ 1e-2.
  static let f32NMSE = 1e-10
  /// Max-abs guard for the same sums: a random walk of k rounding errors of size ≤ |partial
  /// sum|·2⁻²⁴ stays far below 1e-4·√k (≈ 1e-3 at k = 131), which one wrong element exceeds.
  static func f32MaxAbs(k: Int) -> Double { 1e-4 * Double(max(k, 1)).squareRoot() }

  /// The Vulkan backend, or a skip (a failure when VKF_REQUIRE_VULKAN=1).
  static func vulkan() throws -> VulkanBackend {
    if let v = TestBackends.vulkan { return v }
    if ProcessInfo.processInfo.environment["VKF_REQUIRE_VULKAN"] == "1" {
      XCTFail("Vulkan required (VKF_REQUIRE_VULKAN=1) but unavailable")
    }
    throw XCTSkip("Vulkan backend unavailable")
  }

  /// Asserts `actual` within f32 sum tolerances of `expected`.
  static func assertClose(_ expected: [Float], _ actual: [Float], k: Int, _ what: String,
                          file: StaticString = #filePath, line: UInt = #line) {
    if let msg = Compare.check(expected, actual, nmse: f32NMSE, maxAbs: f32MaxAbs(k: k)) {
      XCTFail("\(what): \(msg)", file: file, line: line)
    }
  }

  /// Naive Double GEMM: C = α·op(A)·op(B) + β·C over `batch` entries with element strides
  /// (0 = broadcast); the ground truth independent of both backends.
  static func gemm(_ a: [Float], _ b: [Float], _ c: [Float], batch: Int, m: Int, n: Int, k: Int,
                   transposeA: Bool, transposeB: Bool, strideA: Int, strideB: Int,
                   alpha: Float, beta: Float) -> [Float] {
    var out = c
    for z in 0..<batch {
      for i in 0..<m {
        for j in 0..<n {
          var s = 0.0
          for p in 0..<k {
            let av = transposeA ? a[z * strideA + p * m + i] : a[z * strideA + i * k + p]
            let bv = transposeB ? b[z * strideB + j * k + p] : b[z * strideB + p * n + j]
            s += Double(av) * Double(bv)
          }
          let idx = z * m * n + i * n + j
          out[idx] = Float(Double(alpha) * s + (beta == 0 ? 0 : Double(beta) * Double(c[idx])))
        }
      }
    }
    return out
  }
}

/// Base of the linear-algebra shader tests: fails any test after which the validation layer
/// reported a warning or an error.
class LinearShaderTestCase: XCTestCase {
  override func setUpWithError() throws {
    TestBackends.vulkan?.clearValidationMessages()
  }

  override func tearDownWithError() throws {
    guard let vk = TestBackends.vulkan else { return }
    try vk.synchronize()
    XCTAssertEqual(vk.validationMessages, [], "validation layer messages")
    vk.clearValidationMessages()
  }
}

final class MatmulShaderTests: LinearShaderTestCase {
  /// MatmulPush mirrors matmul.comp's block after boff[8]: 10 uint + 2 float = 48 bytes.
  func testMatmulPush_sizeMatchesShaderBlock() {
    XCTAssertEqual(MemoryLayout<MatmulPush>.size, 12 * 4)
    XCTAssertLessThanOrEqual(MemoryLayout<MatmulPush>.size, 96)
  }

  /// Runs one (batched) matmul on Vulkan and CPU and checks both against the Double reference.
  private func check(m: Int, n: Int, k: Int, batch: Int = 1, batchA: Int? = nil, batchB: Int? = nil,
                     transposeA: Bool = false, transposeB: Bool = false,
                     alpha: Float = 1, beta: Float = 0, cFill: Float? = nil, seed: UInt64 = 1,
                     file: StaticString = #filePath, line: UInt = #line) throws {
    let vk = try LinearCheck.vulkan()
    let ba = batchA ?? batch, bb = batchB ?? batch
    let aShape = transposeA ? [k, m] : [m, k], bShape = transposeB ? [n, k] : [k, n]
    func shape(_ b: Int, _ s: [Int]) -> [Int] { batch == 1 && b == 1 ? s : [b] + s }
    let av = TestData.uniform(ba * m * k, seed: seed)
    let bv = TestData.uniform(bb * k * n, seed: seed + 1)
    let cv = cFill.map { [Float](repeating: $0, count: batch * m * n) }
      ?? TestData.uniform(batch * m * n, seed: seed + 2)
    let expected = LinearCheck.gemm(av, bv, cv, batch: batch, m: m, n: n, k: k,
                                    transposeA: transposeA, transposeB: transposeB,
                                    strideA: ba == 1 ? 0 : m * k, strideB: bb == 1 ? 0 : k * n,
                                    alpha: alpha, beta: beta)
    let label = "\(batch)×\(m)×\(n)×\(k) tA \(transposeA) tB \(transposeB)"
    for backend in [vk as Backend, TestBackends.cpu] {
      let a = try backend.tensor(av, shape: shape(ba, aShape))
      let b = try backend.tensor(bv, shape: shape(bb, bShape))
      let c = try backend.tensor(cv, shape: shape(batch, [m, n]))
      try backend.matmul(a, b, into: c, transposeA: transposeA, transposeB: transposeB,
                         alpha: alpha, beta: beta)
      LinearCheck.assertClose(expected, try backend.floats(c), k: k, "\(backend.name) \(label)",
                              file: file, line: line)
    }
  }

  func testMatmul_67x45x131_allTransposes() throws {
    for tA in [false, true] {
      for tB in [false, true] { try check(m: 67, n: 45, k: 131, transposeA: tA, transposeB: tB) }
    }
  }

  func testMatmul_64cubed_exactTiles() throws { try check(m: 64, n: 64, k: 64) }

  func testMatmul_1x1x1() throws { try check(m: 1, n: 1, k: 1) }

  func testMatmul_singleRow_1x300x7() throws {
    try check(m: 1, n: 300, k: 7)
    try check(m: 1, n: 300, k: 7, transposeA: true, transposeB: true)
  }

  func testMatmul_129x65x33_partialTiles() throws { try check(m: 129, n: 65, k: 33) }

  func testMatmul_batched_broadcastA() throws {
    try check(m: 19, n: 23, k: 17, batch: 3, batchA: 1, transposeB: true)
  }

  func testMatmul_batched_broadcastB() throws {
    try check(m: 19, n: 23, k: 17, batch: 3, batchB: 1, transposeA: true)
  }

  func testMatmul_batched_allOperands() throws { try check(m: 33, n: 9, k: 70, batch: 3) }

  /// Grids clamped below the tile count (as past maxComputeWorkGroupCount, 65535 on
  /// lavapipe): every workgroup grid-strides over several tiles and batch entries.
  func testMatmul_clampedGrid_gridStrides() throws {
    VulkanBackend.gridLimitOverride = (2, 1, 2)
    defer { VulkanBackend.gridLimitOverride = nil }
    try check(m: 129, n: 200, k: 33, batch: 5, transposeB: true)
  }

  /// A reduction longer than llvmpipe lets one invocation loop (65535 iterations in all, then
  /// it silently stops: k = 20000 came back 7/8 zero) is dispatched in K slices there; every
  /// layout, a batch and β accumulation. On other drivers it is one dispatch.
  func testMatmul_longK_slicedWhereLoopsAreCapped() throws {
    let vk = try LinearCheck.vulkan()
    if vk.capabilities.matmulMaxK == nil { print("no loop cap on \(vk.name): one dispatch") }
    for tA in [false, true] {
      for tB in [false, true] { try check(m: 9, n: 7, k: 20_003, transposeA: tA, transposeB: tB, alpha: 0.5, beta: 2) }
    }
    try check(m: 5, n: 3, k: 9_000, batch: 2, transposeB: true)
  }

  func testMatmul_alphaBeta_accumulatesIntoC() throws {
    try check(m: 37, n: 41, k: 29, alpha: 0.5, beta: 0.25)
  }

  func testMatmul_betaZero_ignoresNaNInC() throws {
    try check(m: 37, n: 41, k: 29, alpha: 2, beta: 0, cFill: .nan)
  }

  /// Operands that are views at odd element offsets into larger buffers (binding offsets).
  func testMatmul_offsetViews_useBindingOffsets() throws {
    let vk = try LinearCheck.vulkan()
    let m = 5, n = 6, k = 7
    let av = TestData.uniform(m * k, seed: 11), bv = TestData.uniform(k * n, seed: 12)
    let a = try vk.tensor(TestData.uniform(m * k + 3, seed: 13), shape: [m * k + 3])
      .view(offset: 3, shape: [m, k])
    let b = try vk.tensor(TestData.uniform(k * n + 5, seed: 14), shape: [k * n + 5])
      .view(offset: 5, shape: [k, n])
    let cAll = try vk.tensor([Float](repeating: -7, count: m * n + 9), shape: [m * n + 9])
    let c = try cAll.view(offset: 1, shape: [m, n])
    try vk.upload(av, to: a)
    try vk.upload(bv, to: b)
    try vk.matmul(a, b, into: c, transposeA: false, transposeB: false, alpha: 1, beta: 0)
    let expected = LinearCheck.gemm(av, bv, [Float](repeating: 0, count: m * n), batch: 1,
                                    m: m, n: n, k: k, transposeA: false, transposeB: false,
                                    strideA: 0, strideB: 0, alpha: 1, beta: 0)
    let all = try vk.floats(cAll)
    LinearCheck.assertClose(expected, Array(all[1..<(1 + m * n)]), k: k, "offset views")
    XCTAssertEqual(all[0], -7, "element before the view untouched")
    XCTAssertEqual(Array(all[(1 + m * n)...]), [Float](repeating: -7, count: 8),
                   "elements after the view untouched")
  }
}
