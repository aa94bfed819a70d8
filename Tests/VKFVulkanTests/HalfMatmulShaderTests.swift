import XCTest
import VKFCore
@testable import VKFCPU
import VKFTestSupport
@testable import VKFVulkan

// matmul.comp with f16 / bf16 operands (A_TYPE / B_TYPE) against the CPU twin (panels widened
// for sgemm) and a Double reference on the values the 16-bit operands actually hold. Widening
// is exact, so the f32-sum tolerances of LinearCheck apply unchanged.
final class HalfMatmulShaderTests: LinearShaderTestCase {
  /// One product with A and B stored as `ta` / `tb` on Vulkan and the CPU (with `cpu`'s panel
  /// size), both checked against the Double GEMM of the rounded inputs.
  private func check(m: Int, n: Int, k: Int, batch: Int = 1, batchB: Int? = nil, ta: DType, tb: DType,
                     transposeA: Bool, transposeB: Bool, alpha: Float = 1, beta: Float = 0,
                     cpu: CPUBackend = TestBackends.cpu, seed: UInt64 = 3,
                     file: StaticString = #filePath, line: UInt = #line) throws {
    let vk = try LinearCheck.vulkan()
    let bb = batchB ?? batch
    let aShape = transposeA ? [k, m] : [m, k], bShape = transposeB ? [n, k] : [k, n]
    func shape(_ b: Int, _ s: [Int]) -> [Int] { batch == 1 && b == 1 ? s : [b] + s }
    func operand(_ count: Int, _ t: DType, _ seed: UInt64) -> (bits: [UInt16], values: [Float]) {
      let v = TestData.uniform(count, seed: seed)
      return t == .f32 ? ([], v) : TestData.half(v, t)
    }
    let av = operand(batch * m * k, ta, seed), bv = operand(bb * k * n, tb, seed + 1)
    let cv = TestData.uniform(batch * m * n, seed: seed + 2)
    let expected = LinearCheck.gemm(av.values, bv.values, cv, batch: batch, m: m, n: n, k: k,
                                    transposeA: transposeA, transposeB: transposeB,
                                    strideA: batch == 1 ? 0 : m * k, strideB: bb == 1 ? 0 : k * n,
                                    alpha: alpha, beta: beta)
    let label = "\(batch)×\(m)×\(n)×\(k) A \(ta)\(transposeA ? "ᵀ" : "") B \(tb)\(transposeB ? "ᵀ" : "")"
    for backend in [vk as Backend, cpu] {
      func tensor(_ o: (bits: [UInt16], values: [Float]), _ t: DType, _ s: [Int]) throws -> Tensor {
        t == .f32 ? try backend.tensor(o.values, shape: s) : try backend.tensor(o.bits, shape: s, t)
      }
      let a = try tensor(av, ta, shape(batch, aShape)), b = try tensor(bv, tb, shape(bb, bShape))
      let c = try backend.tensor(cv, shape: shape(batch, [m, n]))
      try backend.matmul(a, b, into: c, transposeA: transposeA, transposeB: transposeB, alpha: alpha, beta: beta)
      LinearCheck.assertClose(expected, try backend.floats(c), k: k, "\(backend.name) \(label)",
                              file: file, line: line)
    }
  }

  /// Every storage pair with a 16-bit operand, every transpose, odd sizes (partial tiles, odd
  /// row lengths so rows start mid-word).
  func testHalfMatmul_67x45x131_everyTypeAndTranspose() throws {
    let types: [(DType, DType)] = [(.f32, .bf16), (.f32, .f16), (.bf16, .f32), (.f16, .f32),
                                   (.bf16, .bf16), (.f16, .bf16)]
    for (ta, tb) in types {
      for tA in [false, true] {
        for tB in [false, true] {
          try check(m: 67, n: 45, k: 131, ta: ta, tb: tb, transposeA: tA, transposeB: tB, alpha: 0.5, beta: 2)
        }
      }
    }
  }

  /// 16-bit operands over a K sliced on llvmpipe (slices start at even elements).
  func testHalfMatmul_longK() throws {
    try check(m: 6, n: 5, k: 12_345, ta: .bf16, tb: .f16, transposeA: false, transposeB: true)
    try check(m: 6, n: 5, k: 12_345, ta: .f32, tb: .bf16, transposeA: true, transposeB: false)
  }

  /// Batched with a broadcast 16-bit B (per-head products over a shared weight).
  func testHalfMatmul_batched_broadcastHalfB() throws {
    try check(m: 19, n: 23, k: 17, batch: 3, batchB: 1, ta: .f32, tb: .bf16, transposeA: false, transposeB: true)
    try check(m: 19, n: 23, k: 17, batch: 3, ta: .f16, tb: .bf16, transposeA: true, transposeB: false)
  }

  /// The CPU twin's panel seams: panels of a few rows, an odd row length (so a panel can
  /// start mid-word) and both operands 16-bit in every orientation, incl. both splitting k.
  func testHalfMatmul_cpuPanelSeams() throws {
    let cpu = CPUBackend()
    cpu.widenPanelElements = 200
    for tA in [false, true] {
      for tB in [false, true] {
        try check(m: 29, n: 31, k: 37, ta: .bf16, tb: .f16, transposeA: tA, transposeB: tB,
                  alpha: 1.5, beta: 0.5, cpu: cpu)
        try check(m: 29, n: 31, k: 37, ta: .f32, tb: .bf16, transposeA: tA, transposeB: tB, cpu: cpu)
      }
    }
  }

  /// A 16-bit view at an even element offset into a larger buffer (the binding offset is
  /// counted in words, the shader doubles it for 16-bit elements).
  func testHalfMatmul_offsetView_usesBindingOffset() throws {
    let vk = try LinearCheck.vulkan()
    let m = 5, n = 6, k = 7
    let av = TestData.uniform(m * k, seed: 41)
    let bv = TestData.half(TestData.uniform(k * n + 4, seed: 42), .bf16)
    let a = try vk.tensor(av, shape: [m, k])
    let b = try vk.tensor(bv.bits, shape: [k * n + 4], .bf16).view(offset: 4, shape: [k, n])
    let c = try vk.allocate([m, n])
    try vk.matmul(a, b, into: c, transposeA: false, transposeB: false, alpha: 1, beta: 0)
    let expected = LinearCheck.gemm(av, Array(bv.values[4...]), [Float](repeating: 0, count: m * n), batch: 1,
                                    m: m, n: n, k: k, transposeA: false, transposeB: false,
                                    strideA: 0, strideB: 0, alpha: 1, beta: 0)
    LinearCheck.assertClose(expected, try vk.floats(c), k: k, "bf16 view at element 4")
  }

  /// C must be f32, operands floats: anything else is refused before work is queued.
  func testHalfMatmul_rejectsHalfOutputAndIntegerOperands() throws {
    let vk = try LinearCheck.vulkan()
    for backend in [vk as Backend, TestBackends.cpu] {
      let a = try backend.allocate([2, 2], .bf16), c16 = try backend.allocate([2, 2], .bf16)
      let ints = try backend.allocate([2, 2], .i32), c = try backend.allocate([2, 2])
      XCTAssertThrowsError(try backend.matmul(a, a, into: c16, transposeA: false, transposeB: false,
                                              alpha: 1, beta: 0), "16-bit C on \(backend.name)")
      XCTAssertThrowsError(try backend.matmul(a, ints, into: c, transposeA: false, transposeB: false,
                                              alpha: 1, beta: 0), "i32 B on \(backend.name)")
    }
  }
}
