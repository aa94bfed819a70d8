import XCTest
import VKFCore
import VKFCPU
import VKFTestSupport
@testable import VKFVulkan

// Shader unit tests of the fused lora_forward.comp against the composed default.
final class LoRAShaderTests: LinearShaderTestCase {
  /// With scale = 0 or B = 0 the fused kernel adds exact zeros to the same tiled x·Wᵀ sums
  /// that matmul.comp / matmul_nf4.comp compute in the same order; only compiler FMA
  /// contraction may differ between the two pipelines, a few ulps of values ≲ 10.
  static let sameOrderMaxAbs = 1e-5
  /// Same reason: identical up to those few ulps, so NMSE ≲ (1e-6)² with margin.
  static let sameOrderNMSE = 1e-12

  func testLoRAForwardPush_sizeMatchesShaderBlock() {
    XCTAssertEqual(MemoryLayout<LoRAForwardPush>.size, 8 * 4)  // m n k r blockSize scale + absmax
  }

  private struct Case {
    var m = 21, inF = 70, outF = 45, r = 8
    var nf4 = false, dropout = false, zeroB = false
    /// Storage of the dense base (f16/bf16: frozen weights kept 16-bit).
    var baseType = DType.f32
    /// NF4 block scales double-quantised (only with nf4).
    var doubleQuant = false
    var scale: Float = 2
  }

  /// Inputs of one case on `backend` (seeded, so every backend gets the same values).
  private func inputs(_ c: Case, on backend: Backend) throws
    -> (x: Tensor, loraX: Tensor?, base: LinearWeight, a: Tensor, b: Tensor, y: Tensor, xa: Tensor)
  {
    let x = try backend.tensor(TestData.uniform(c.m * c.inF, seed: 31), shape: [c.m, c.inF])
    let loraX = c.dropout
      ? try backend.tensor(TestData.uniform(c.m * c.inF, seed: 32), shape: [c.m, c.inF]) : nil
    let wv = TestData.uniform(c.outF * c.inF, seed: 33, -0.5, 0.5)
    let base: LinearWeight = c.nf4
      ? .nf4(try NF4Weight.quantizing(wv, rows: c.outF, cols: c.inF, on: backend, doubleQuant: c.doubleQuant))
      : c.baseType == .f32 ? .dense(try backend.tensor(wv, shape: [c.outF, c.inF]))
      : .dense(try backend.tensor(TestData.half(wv, c.baseType).bits, shape: [c.outF, c.inF], c.baseType))
    let a = try backend.tensor(TestData.uniform(c.r * c.inF, seed: 34), shape: [c.r, c.inF])
    let bv = c.zeroB ? [Float](repeating: 0, count: c.outF * c.r) : TestData.uniform(c.outF * c.r, seed: 35)
    let b = try backend.tensor(bv, shape: [c.outF, c.r])
    // y and xa start as NaN: the op must overwrite both without reading them.
    let y = try backend.tensor([Float](repeating: .nan, count: c.m * c.outF), shape: [c.m, c.outF])
    let xa = try backend.tensor([Float](repeating: .nan, count: c.m * c.r), shape: [c.m, c.r])
    return (x, loraX, base, a, b, y, xa)
  }

  /// The protocol's composed default, spelled out with primitives on `backend`.
  private func composed(_ c: Case, on backend: Backend) throws -> (y: [Float], xa: [Float]) {
    let t = try inputs(c, on: backend)
    try backend.linear(t.x, t.base, into: t.y, beta: 0)
    try backend.matmul(t.loraX ?? t.x, t.a, into: t.xa, transposeA: false, transposeB: true,
                       alpha: 1, beta: 0)
    try backend.matmul(t.xa, t.b, into: t.y, transposeA: false, transposeB: true,
                       alpha: c.scale, beta: 1)
    return (try backend.floats(t.y), try backend.floats(t.xa))
  }

  /// Fused Vulkan loraForward, called through `any Backend` to prove the override is reached.
  private func fused(_ c: Case, on backend: Backend) throws -> (y: [Float], xa: [Float]) {
    let t = try inputs(c, on: backend)
    try backend.loraForward(t.x, loraX: t.loraX, base: t.base, a: t.a, b: t.b, scale: c.scale,
                            into: t.y, xa: t.xa)
    return (try backend.floats(t.y), try backend.floats(t.xa))
  }

  private func checkAgainstComposed(_ c: Case, file: StaticString = #filePath, line: UInt = #line) throws {
    let vk = try LinearCheck.vulkan()
    let got = try fused(c, on: vk)
    let label = "loraForward nf4 \(c.nf4) double quant \(c.doubleQuant) dropout \(c.dropout) base \(c.baseType)"
    for (name, ref) in [("vulkan composed", try composed(c, on: vk)),
                        ("cpu composed", try composed(c, on: TestBackends.cpu)),
                        ("cpu loraForward", try fused(c, on: TestBackends.cpu))] {
      LinearCheck.assertClose(ref.xa, got.xa, k: c.inF, "\(label) xa vs \(name)", file: file, line: line)
      LinearCheck.assertClose(ref.y, got.y, k: c.inF + c.r, "\(label) y vs \(name)", file: file, line: line)
    }
  }

  func testLoRAForward_denseBase_equalsComposed() throws { try checkAgainstComposed(Case()) }

  /// A frozen base stored f16 or bf16 (W_TYPE): widened as staged, like matmul.comp's.
  func testLoRAForward_halfBase_equalsComposed() throws {
    for t in [DType.f16, .bf16] {
      try checkAgainstComposed(Case(baseType: t))
      try checkAgainstComposed(Case(m: 9, inF: 33, outF: 17, r: 4, dropout: true, baseType: t))
    }
  }

  func testLoRAForward_denseBase_loraX_equalsComposed() throws {
    try checkAgainstComposed(Case(dropout: true))
  }

  func testLoRAForward_nf4Base_equalsComposed() throws { try checkAgainstComposed(Case(nf4: true)) }

  func testLoRAForward_nf4Base_loraX_equalsComposed() throws {
    try checkAgainstComposed(Case(m: 67, inF: 130, outF: 66, r: 16, nf4: true, dropout: true, scale: 0.5))
  }

  /// 140×130 / 64 = 285 double-quantised blocks: two nested scales.
  func testLoRAForward_nf4DoubleQuantBase_equalsComposed() throws {
    try checkAgainstComposed(Case(m: 19, inF: 130, outF: 140, r: 8, nf4: true, dropout: true, doubleQuant: true))
  }

  /// scale = 0 and B = 0 (PEFT's initial state) both give y = base(x).
  func testLoRAForward_zeroScaleOrZeroB_equalsBase() throws {
    let vk = try LinearCheck.vulkan()
    for nf4 in [false, true] {
      for c in [Case(nf4: nf4, scale: 0), Case(nf4: nf4, zeroB: true)] {
        let t = try inputs(c, on: vk)
        let base = try vk.allocate([c.m, c.outF])
        try vk.linear(t.x, t.base, into: base, beta: 0)
        let got = try fused(c, on: vk)
        XCTAssertNil(Compare.check(try vk.floats(base), got.y, nmse: Self.sameOrderNMSE,
                                   maxAbs: Self.sameOrderMaxAbs),
                     "nf4 \(nf4) scale \(c.scale) zeroB \(c.zeroB)")
      }
    }
  }

  /// Grids clamped to one workgroup column: the grid-stride loops cover the other tiles.
  func testLoRAForward_clampedGrid_gridStrides() throws {
    VulkanBackend.gridLimitOverride = (1, 1, 1)
    defer { VulkanBackend.gridLimitOverride = nil }
    try checkAgainstComposed(Case(m: 130, inF: 40, outF: 140, r: 4, nf4: true, dropout: true))
  }
}
