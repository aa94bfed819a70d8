import XCTest
import VKFCore
import VKFCPU
import VKFTestSupport
@testable import VKFVulkan

// Shader unit tests of dequantize_nf4.comp and matmul_nf4.comp against their CPU twins.
final class NF4ShaderTests: LinearShaderTestCase {
  /// Dequantisation is one f32 multiply of the same two f32 values on both sides: bit-exact.
  static let dequantTolerance = 0.0

  func testNF4Push_sizesMatchShaderBlocks() {
    XCTAssertEqual(MemoryLayout<NF4AbsmaxPush>.size, 2 * 4)      // nestedBlock, offset
    XCTAssertEqual(MemoryLayout<DequantizeNF4Push>.size, 4 * 4)  // count, blockSize + absmax
    XCTAssertEqual(MemoryLayout<MatmulNF4Push>.size, 9 * 4)      // m n k cols blockSize α β + absmax
  }

  /// Quantised weight (rows, cols) on `backend` from seeded values, plus the values it encodes.
  /// With `doubleQuant` the block scales are u8 codes + nested scales, decoded in the kernels.
  private func weight(rows: Int, cols: Int, blockSize: Int, seed: UInt64, on backend: Backend,
                      doubleQuant: Bool = false) throws -> (NF4Weight, [Float])
  {
    let values = TestData.uniform(rows * cols, seed: seed, -0.5, 0.5)
    let q = try NF4Weight.quantizing(values, rows: rows, cols: cols, on: backend, blockSize: blockSize,
                                     doubleQuant: doubleQuant)
    let (packed, plain) = NF4.quantize(values, blockSize: blockSize)
    let absmax = doubleQuant ? NF4DoubleQuant.encode(plain).decoded : plain
    return (q, NF4.dequantize(packed: packed, absmax: absmax, count: values.count, blockSize: blockSize))
  }

  func testDequantizeNF4_equalsCPUDequantize() throws {
    let vk = try LinearCheck.vulkan()
    // 37×22 = 814 elements: not a multiple of 8 (partial last word) nor of either block size.
    // Double-quantised: 37×22 / 2 = 407 blocks (two nested scales, a partial code word),
    // 100×200 / 64 = 313 blocks, 1×2 / 2 = 1 block.
    for (rows, cols, block, dq) in [(37, 22, 64, false), (37, 22, 6, false), (1, 2, 2, false), (64, 64, 64, false),
                                    (37, 22, 2, true), (100, 200, 64, true), (1, 2, 2, true)] {
      let (q, expected) = try weight(rows: rows, cols: cols, blockSize: block, seed: 5, on: vk, doubleQuant: dq)
      let out = try vk.allocate([rows, cols])
      try vk.dequantizeNF4(q, into: out)
      let got = try vk.floats(out)
      let label = "\(rows)×\(cols) block \(block) double quant \(dq)"
      XCTAssertNil(Compare.check(expected, got, nmse: Self.dequantTolerance,
                                 maxAbs: Self.dequantTolerance), label)
      // The CPU backend's op agrees too.
      let (qc, _) = try weight(rows: rows, cols: cols, blockSize: block, seed: 5, on: TestBackends.cpu,
                               doubleQuant: dq)
      let outc = try TestBackends.cpu.allocate([rows, cols])
      try TestBackends.cpu.dequantizeNF4(qc, into: outc)
      XCTAssertEqual(try TestBackends.cpu.floats(outc), got, "cpu vs vulkan " + label)
    }
    XCTAssertEqual(vk.validationMessages, [])
  }

  /// matmulNF4 on Vulkan vs the CPU's dense matmul with the dequantised weight.
  /// x stored `xType` (f16/bf16: QLoRA's 16-bit compute dtype, the X_TYPE variants); the
  /// dense reference multiplies the values the rounded x holds, so f32 tolerances apply.
  private func checkMatmulNF4(m: Int, rows: Int, cols: Int, transposeB: Bool, alpha: Float,
                              beta: Float, blockSize: Int = 64, doubleQuant: Bool = false,
                              xType: DType = .f32) throws {
    let vk = try LinearCheck.vulkan(), cpu = TestBackends.cpu
    let (q, dense) = try weight(rows: rows, cols: cols, blockSize: blockSize, seed: 21, on: vk,
                                doubleQuant: doubleQuant)
    let (k, n) = transposeB ? (cols, rows) : (rows, cols)
    let raw = TestData.uniform(m * k, seed: 22), yv = TestData.uniform(m * n, seed: 23)
    let half = xType == .f32 ? nil : TestData.half(raw, xType)
    let xv = half?.values ?? raw
    func xTensor(_ b: Backend) throws -> Tensor {
      if let half { return try b.tensor(half.bits, shape: [m, k], xType) }
      return try b.tensor(xv, shape: [m, k])
    }
    let x = try xTensor(vk), y = try vk.tensor(yv, shape: [m, n])
    try vk.matmulNF4(x, q, into: y, transposeB: transposeB, alpha: alpha, beta: beta)
    let got = try vk.floats(y)

    let xc = try xTensor(cpu), yc = try cpu.tensor(yv, shape: [m, n])
    let xDense = try cpu.tensor(xv, shape: [m, k])
    let wc = try cpu.tensor(dense, shape: [rows, cols])
    try cpu.matmul(xDense, wc, into: yc, transposeA: false, transposeB: transposeB, alpha: alpha, beta: beta)
    let label = "matmulNF4 x \(xType) \(m)×(\(rows),\(cols)) tB \(transposeB) double quant \(doubleQuant)"
    LinearCheck.assertClose(try cpu.floats(yc), got, k: k, label + " vs cpu dense")

    // And the CPU's own matmulNF4.
    let (qc, _) = try weight(rows: rows, cols: cols, blockSize: blockSize, seed: 21, on: cpu,
                             doubleQuant: doubleQuant)
    let yc2 = try cpu.tensor(yv, shape: [m, n])
    try cpu.matmulNF4(xc, qc, into: yc2, transposeB: transposeB, alpha: alpha, beta: beta)
    LinearCheck.assertClose(try cpu.floats(yc2), got, k: k, label + " vs cpu matmulNF4")
  }

  func testMatmulNF4_forward_transposeB_equalsDequantizedMatmul() throws {
    try checkMatmulNF4(m: 13, rows: 70, cols: 90, transposeB: true, alpha: 1, beta: 0)
    try checkMatmulNF4(m: 67, rows: 45, cols: 130, transposeB: true, alpha: 0.5, beta: 0.25)
  }

  func testMatmulNF4_inputGradient_untransposed_equalsDequantizedMatmul() throws {
    try checkMatmulNF4(m: 13, rows: 70, cols: 90, transposeB: false, alpha: 1, beta: 0)
    try checkMatmulNF4(m: 5, rows: 66, cols: 33, transposeB: false, alpha: 2, beta: 1, blockSize: 6)
  }

  /// Double-quantised block scales decoded inside the tile loads: 70×90 / 6 = 1050 blocks
  /// (five nested scales), both orientations.
  func testMatmulNF4_doubleQuant_equalsDequantizedMatmul() throws {
    try checkMatmulNF4(m: 13, rows: 70, cols: 90, transposeB: true, alpha: 1, beta: 0, blockSize: 6,
                       doubleQuant: true)
    try checkMatmulNF4(m: 5, rows: 66, cols: 130, transposeB: false, alpha: 2, beta: 1, doubleQuant: true)
  }

  /// 16-bit activations (X_TYPE 1/2) in both orientations, with odd k so rows start mid-word,
  /// and a view at an even element offset.
  func testMatmulNF4_halfActivations_equalDequantizedMatmul() throws {
    try checkMatmulNF4(m: 13, rows: 70, cols: 91, transposeB: true, alpha: 1, beta: 0, xType: .bf16)
    try checkMatmulNF4(m: 7, rows: 45, cols: 130, transposeB: true, alpha: 0.5, beta: 0.25, xType: .f16)
    try checkMatmulNF4(m: 5, rows: 66, cols: 35, transposeB: false, alpha: 2, beta: 1, blockSize: 6,
                       doubleQuant: true, xType: .bf16)
    try checkMatmulNF4(m: 9, rows: 66, cols: 40, transposeB: false, alpha: 1, beta: 0, xType: .f16)
    // A view starting at element 2·k into a bf16 buffer: the shader counts from 2·boff.
    let vk = try LinearCheck.vulkan(), cpu = TestBackends.cpu
    let (rows, cols, m) = (24, 33, 4)
    let (q, dense) = try weight(rows: rows, cols: cols, blockSize: 64, seed: 5, on: vk)
    let h = TestData.half(TestData.uniform((m + 2) * cols, seed: 6), .bf16)
    let whole = try vk.tensor(h.bits, shape: [m + 2, cols], .bf16)
    let x = try whole.view(offset: 2 * cols, shape: [m, cols])
    let y = try vk.allocate([m, rows])
    try vk.matmulNF4(x, q, into: y, transposeB: true, alpha: 1, beta: 0)
    let xc = try cpu.tensor(Array(h.values[(2 * cols)...]), shape: [m, cols])
    let ref = try cpu.allocate([m, rows])
    try cpu.matmul(xc, try cpu.tensor(dense, shape: [rows, cols]), into: ref, transposeA: false,
                   transposeB: true, alpha: 1, beta: 0)
    LinearCheck.assertClose(try cpu.floats(ref), try vk.floats(y), k: cols, "bf16 x view at 2·k")
  }

  /// Grids clamped to one or two workgroups per dimension: the grid-stride loops cover the rest.
  func testNF4Kernels_clampedGrid_gridStride() throws {
    let vk = try LinearCheck.vulkan()
    VulkanBackend.gridLimitOverride = (1, 2, 1)
    defer { VulkanBackend.gridLimitOverride = nil }
    // 64×90 = 5760 elements = 720 words: 3 rounds of a 256-invocation workgroup.
    let (q, expected) = try weight(rows: 64, cols: 90, blockSize: 64, seed: 7, on: vk)
    let out = try vk.allocate([64, 90])
    try vk.dequantizeNF4(q, into: out)
    XCTAssertEqual(try vk.floats(out), expected)
    try checkMatmulNF4(m: 150, rows: 130, cols: 40, transposeB: true, alpha: 1, beta: 0)
    try checkMatmulNF4(m: 150, rows: 40, cols: 130, transposeB: false, alpha: 1, beta: 0)
  }
}
