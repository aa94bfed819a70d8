import XCTest
import VKFCore
import VKFCPU
import VKFTestSupport
@testable import VKFVulkan

// matmul_coopmat.comp (f16 × f16 → f32 on cooperative matrices) against a Double GEMM of the
// stored f16 values and the CPU twin; the selection rule; the compile probe. lavapipe exposes
// no cooperative matrices, so the product tests skip there (with the device's reason) and run
// on a GPU that has them.
final class CoopmatShaderTests: LinearShaderTestCase {
  /// Tensor-core f32 accumulation may truncate rather than round partial sums: a biased error
  /// up to k·2⁻²³ relative (≈ 1.6e-5 at k = 131, NMSE ~ 3e-10); 1e-8 leaves 30× margin while a
  /// layout or staging bug (a swapped half, a wrong row) gives NMSE ≳ 1e-2.
  static let coopmatNMSE = 1e-8
  /// Max-abs guard for the same sums (terms ≤ 1 in size): 4× the f32 bound.
  static func coopmatMaxAbs(k: Int) -> Double { 4 * LinearCheck.f32MaxAbs(k: k) }

  /// The backend when f16 × f16 products run on matmul_coopmat.comp with the device's own
  /// intrinsics, else a skip naming why.
  private func coopmatBackend() throws -> VulkanBackend {
    let vk = try LinearCheck.vulkan()
    guard vk.usesCooperativeMatrix(a: .f16, b: .f16) else {
      let c = vk.capabilities.cooperativeMatrix
      throw XCTSkip("\(vk.capabilities.deviceName) runs no cooperative-matrix kernel: "
        + (c.note.isEmpty ? "disabled (VKF_MATMUL_COOPMAT=0 or shared memory)" : c.note))
    }
    return vk
  }

  /// `body` with f16 × f16 products on the kernel with modelled intrinsics (any device): the
  /// staging, tiling, grid strides and epilogue checked where the hardware path cannot be.
  private func emulated(_ m: Int, _ n: Int, _ k: Int, _ body: () throws -> Void) throws {
    _ = try LinearCheck.vulkan()
    VulkanBackend.coopmatEmulation = CooperativeMatrixShape(flavour: .emulated, m: m, n: n, k: k)
    defer { VulkanBackend.coopmatEmulation = nil }
    try body()
  }

  private func check(m: Int, n: Int, k: Int, batch: Int = 1, batchB: Int? = nil, transposeA: Bool,
                     transposeB: Bool, alpha: Float = 1, beta: Float = 0, seed: UInt64 = 11,
                     file: StaticString = #filePath, line: UInt = #line) throws {
    let vk = VulkanBackend.coopmatEmulation == nil ? try coopmatBackend() : try LinearCheck.vulkan()
    XCTAssertTrue(vk.usesCooperativeMatrix(a: .f16, b: .f16), file: file, line: line)
    let bb = batchB ?? batch
    let aShape = transposeA ? [k, m] : [m, k], bShape = transposeB ? [n, k] : [k, n]
    func shape(_ b: Int, _ s: [Int]) -> [Int] { batch == 1 && b == 1 ? s : [b] + s }
    let av = TestData.half(TestData.uniform(batch * m * k, seed: seed), .f16)
    let bv = TestData.half(TestData.uniform(bb * k * n, seed: seed + 1), .f16)
    let cv = TestData.uniform(batch * m * n, seed: seed + 2)
    let expected = LinearCheck.gemm(av.values, bv.values, cv, batch: batch, m: m, n: n, k: k,
                                    transposeA: transposeA, transposeB: transposeB,
                                    strideA: batch == 1 ? 0 : m * k, strideB: bb == 1 ? 0 : k * n,
                                    alpha: alpha, beta: beta)
    let label = "coopmat \(batch)×\(m)×\(n)×\(k)\(transposeA ? " Aᵀ" : "")\(transposeB ? " Bᵀ" : "")"
    for backend in [vk as Backend, TestBackends.cpu] {
      let a = try backend.tensor(av.bits, shape: shape(batch, aShape), .f16)
      let b = try backend.tensor(bv.bits, shape: shape(bb, bShape), .f16)
      let c = try backend.tensor(cv, shape: shape(batch, [m, n]))
      try backend.matmul(a, b, into: c, transposeA: transposeA, transposeB: transposeB, alpha: alpha, beta: beta)
      if let msg = Compare.check(expected, try backend.floats(c), nmse: Self.coopmatNMSE,
                                 maxAbs: Self.coopmatMaxAbs(k: k)) {
        XCTFail("\(backend.name) \(label): \(msg)", file: file, line: line)
      }
    }
  }

  /// Partial tiles on every side, k not a multiple of the 32-deep step, odd row lengths (rows
  /// start mid-word), every transpose, α and β.
  func testCoopmat_67x45x131_everyTranspose() throws {
    for tA in [false, true] {
      for tB in [false, true] {
        try check(m: 67, n: 45, k: 131, transposeA: tA, transposeB: tB, alpha: 0.5, beta: 2)
      }
    }
  }

  /// Several workgroup tiles, batched with a broadcast B (LoRA-style weights), and a grid
  /// clamped to one workgroup per dimension so the grid-stride loops cover the rest.
  func testCoopmat_batched_broadcast_clampedGrid() throws {
    try check(m: 130, n: 150, k: 96, batch: 3, batchB: 1, transposeA: false, transposeB: true)
    VulkanBackend.gridLimitOverride = (1, 1, 1)
    defer { VulkanBackend.gridLimitOverride = nil }
    try check(m: 130, n: 70, k: 40, batch: 2, transposeA: true, transposeB: false, beta: 1)
  }

  /// The kernel with modelled intrinsics on this device: every transpose at 16×16×16, and
  /// the other shapes devices list (NVIDIA's 16×8×16, Intel's 8×16×16) with both operands
  /// transposed differently (each shape × transpose pair is a pipeline lavapipe compiles);
  /// partial tiles, odd k, batches with a broadcast B, α and β, and a grid clamped to one
  /// workgroup.
  func testCoopmatEmulated_everyShapeAndTranspose() throws {
    for (lm, ln, lk) in [(16, 16, 16), (16, 8, 16), (8, 16, 16)] {
      try emulated(lm, ln, lk) {
        let pairs: [(Bool, Bool)] = lm == 16 && ln == 16 ? [(false, false), (false, true), (true, false), (true, true)]
          : [(false, true), (true, false)]
        for (tA, tB) in pairs {
          try check(m: 67, n: 45, k: 131, transposeA: tA, transposeB: tB, alpha: 0.5, beta: 2)
        }
      }
    }
    try emulated(16, 16, 16) {
      try check(m: 70, n: 130, k: 40, batch: 2, batchB: 1, transposeA: false, transposeB: true)
    }
    // One workgroup for 2 × 2 × 2 tiles. Small: llvmpipe stops an invocation's loops after
    // 65535 iterations in all, and the modelled intrinsics loop ~4k times per tile.
    try emulated(16, 16, 16) {
      VulkanBackend.gridLimitOverride = (1, 1, 1)
      defer { VulkanBackend.gridLimitOverride = nil }
      try check(m: 70, n: 66, k: 20, batch: 2, transposeA: true, transposeB: false, beta: 1)
    }
  }

  /// An f16 view starting at an even element offset (bound from 2·boff).
  func testCoopmat_viewAtOffset() throws {
    let vk = try coopmatBackend()
    let (m, n, k) = (20, 24, 33)
    let a = TestData.half(TestData.uniform((m + 2) * k, seed: 5), .f16)
    let b = TestData.half(TestData.uniform(n * k, seed: 6), .f16)
    let whole = try vk.tensor(a.bits, shape: [m + 2, k], .f16)
    let av = try whole.view(offset: 2 * k, shape: [m, k])
    let c = try vk.allocate([m, n])
    try vk.matmul(av, try vk.tensor(b.bits, shape: [n, k], .f16), into: c, transposeA: false,
                  transposeB: true, alpha: 1, beta: 0)
    let expected = LinearCheck.gemm(Array(a.values[(2 * k)...]), b.values, [Float](repeating: 0, count: m * n),
                                    batch: 1, m: m, n: n, k: k, transposeA: false, transposeB: true,
                                    strideA: 0, strideB: 0, alpha: 1, beta: 0)
    XCTAssertNil(Compare.check(expected, try vk.floats(c), nmse: Self.coopmatNMSE, maxAbs: Self.coopmatMaxAbs(k: k)))
  }

  // MARK: - Compile probe and selection (no device needed)

  /// The NV flavour compiles with the run-time glslang (Debian 12's glslang 12 has it), so a
  /// device with VK_NV_cooperative_matrix gets the kernel.
  func testCoopmatNV_compilesWithRuntimeGlslang() throws {
    XCTAssertNil(CooperativeMatrixProbe.compileError(.nv))
    // The dependency tracker reads its SPIR-V (cooperative-matrix types and all): A and B
    // are read-only, C is written, so barriers follow the real data flow.
    let source = try ShaderCompiler.preprocess("matmul_coopmat.comp", defines: MatmulVariant.coopmatDefines(.nv))
    let words = try ShaderCompiler.compile(source, name: "matmul_coopmat.comp")
    XCTAssertEqual(SPIRVReflection.writableBindings(words, fallbackCount: 3), [2])
  }

  /// The KHR flavour either compiles, or the probe's error is glslang's own complaint about
  /// the cooperative-matrix syntax (glslang 12 lacks GL_KHR_cooperative_matrix).
  func testCoopmatKHR_compileProbe_compilesOrNamesTheFailure() {
    guard let error = CooperativeMatrixProbe.compileError(.khr) else { return }
    XCTAssertTrue(error.contains("ERROR") && error.contains("coopmat"), error)
  }

  private let s16 = CooperativeMatrixShape(flavour: .khr, m: 16, n: 16, k: 16)
  private func shape(_ f: CooperativeMatrixShape.Flavour, _ m: Int, _ n: Int, _ k: Int) -> CooperativeMatrixShape {
    CooperativeMatrixShape(flavour: f, m: m, n: n, k: k)
  }

  func testCoopmatChoice_prefersKHR16x16x16_fallsBackToNV_andSaysWhy() {
    let khr = [shape(.khr, 16, 8, 16), s16, shape(.khr, 64, 64, 16)]
    let nv = [shape(.nv, 16, 8, 16)]
    let ok: (CooperativeMatrixShape.Flavour) -> String? = { _ in nil }
    var c = CooperativeMatrixProbe.choose(exposed: true, khr: khr, nv: nv, float16: true, fixedSubgroup: true,
                                          compileError: ok)
    XCTAssertEqual(c.chosen, s16)
    XCTAssertEqual(c.offered.count, 4)
    // KHR does not compile: NV's only shape, with the reason kept.
    c = CooperativeMatrixProbe.choose(exposed: true, khr: khr, nv: nv, float16: true, fixedSubgroup: true,
                                      compileError: { $0 == .khr ? "ERROR: 'coopmat' : undeclared identifier" : nil })
    XCTAssertEqual(c.chosen, shape(.nv, 16, 8, 16))
    // Neither compiles: none, both reasons.
    c = CooperativeMatrixProbe.choose(exposed: true, khr: khr, nv: nv, float16: true, fixedSubgroup: true,
                                      compileError: { _ in "ERROR: x" })
    XCTAssertNil(c.chosen)
    XCTAssertTrue(c.note.contains("GL_KHR_cooperative_matrix") && c.note.contains("GL_NV_cooperative_matrix"), c.note)
    // Without 16×16×16 the largest fitting tile; 64×64 does not fit 32×32 subgroup tiles.
    c = CooperativeMatrixProbe.choose(exposed: true, khr: [shape(.khr, 16, 8, 16), shape(.khr, 32, 8, 16),
                                                           shape(.khr, 64, 64, 16)],
                                      nv: [], float16: true, fixedSubgroup: true, compileError: ok)
    XCTAssertEqual(c.chosen, shape(.khr, 32, 8, 16))
  }

  func testCoopmatChoice_requirementsRefused_withReasons() {
    let ok: (CooperativeMatrixShape.Flavour) -> String? = { _ in nil }
    var c = CooperativeMatrixProbe.choose(exposed: false, khr: [], nv: [], float16: true, fixedSubgroup: true,
                                          compileError: ok)
    XCTAssertNil(c.chosen)
    XCTAssertTrue(c.note.contains("exposes neither"), c.note)
    c = CooperativeMatrixProbe.choose(exposed: true, khr: [], nv: [], float16: true, fixedSubgroup: true,
                                      compileError: ok)
    XCTAssertTrue(c.note.contains("no f16·f16→f32"), c.note)
    c = CooperativeMatrixProbe.choose(exposed: true, khr: [s16], nv: [], float16: false, fixedSubgroup: true,
                                      compileError: ok)
    XCTAssertNil(c.chosen)
    XCTAssertTrue(c.note.contains("shaderFloat16"), c.note)
    c = CooperativeMatrixProbe.choose(exposed: true, khr: [s16], nv: [], float16: true, fixedSubgroup: false,
                                      compileError: ok)
    XCTAssertNil(c.chosen)
    XCTAssertTrue(c.note.contains("subgroup size"), c.note)
    c = CooperativeMatrixProbe.choose(exposed: true, khr: [shape(.khr, 64, 64, 16), shape(.khr, 16, 16, 4)],
                                      nv: [], float16: true, fixedSubgroup: true, compileError: ok)
    XCTAssertNil(c.chosen)
    XCTAssertTrue(c.note.contains("fits"), c.note)
  }

  /// The kernel's shared memory for the shapes devices list (16×16×16 on NVIDIA / AMD,
  /// 16×8×16 on NVIDIA's NV list, 8×16×16 on Intel): within the 16 KiB every device has.
  func testCoopmatTiling_sharedMemory_fitsEveryDevice() {
    for (m, n, k) in [(16, 16, 16), (16, 8, 16), (8, 16, 16), (16, 8, 8)] {
      let t = CoopmatTiling(shape: shape(.nv, m, n, k), subgroupSize: 32)
      XCTAssertEqual(t.bm, 64); XCTAssertEqual(t.bn, 64)
      XCTAssertLessThanOrEqual(t.sharedBytes, 16 * 1024, "\(m)×\(n)×\(k)")
      XCTAssertEqual(t.specialization, [128, 1, 1, UInt32(m), UInt32(n), UInt32(k), UInt32(32 / m), UInt32(32 / n), 32])
    }
  }

  /// On a device without cooperative matrices f16 × f16 stays on matmul.comp (covered by
  /// HalfMatmulShaderTests); here the rule itself.
  func testCoopmatSelection_onlyForF16Pairs() throws {
    let vk = try LinearCheck.vulkan()
    let has = vk.capabilities.cooperativeMatrix.chosen != nil && MatmulVariant.coopmatAllowed
    XCTAssertEqual(vk.usesCooperativeMatrix(a: .f16, b: .f16), has)
    XCTAssertFalse(vk.usesCooperativeMatrix(a: .bf16, b: .f16))
    XCTAssertFalse(vk.usesCooperativeMatrix(a: .f32, b: .f16))
  }
}
