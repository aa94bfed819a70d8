import VKFCore
import VKFTestSupport
import XCTest

@testable import VKFCPU

final class CPULinearAlgebraTests: XCTestCase {
  // Odd sizes so no dimension is a multiple of a vector or a BLAS tile.
  static let (m, k, n) = (67, 45, 131)

  func test_matmul_allTransposeCombinations_matchNaive() throws {
    let (m, k, n) = (Self.m, Self.k, Self.n)
    let a = TestData.uniform(m * k, seed: 1), b = TestData.uniform(k * n, seed: 2)
    let c0 = TestData.uniform(m * n, seed: 3)
    for ta in [false, true] {
      for tb in [false, true] {
        let ta_ = try T.f32(a, ta ? [k, m] : [m, k]), tb_ = try T.f32(b, tb ? [n, k] : [k, n])
        let c = try T.f32(c0, [m, n])
        try T.cpu.matmul(ta_, tb_, into: c, transposeA: ta, transposeB: tb, alpha: 0.75, beta: -0.5)
        let ref = T.matmul(a, b, c0, m: m, n: n, k: k, ta: ta, tb: tb, alpha: 0.75, beta: -0.5)
        T.assertClose(ref, try T.read(c), nmse: Tol.f32NMSE, maxAbs: Tol.f32MaxAbs, "ta \(ta) tb \(tb)")
      }
    }
  }

  func test_matmul_betaZeroOverwritesNaN() throws {
    let a = try T.f32(TestData.uniform(6, seed: 4), [2, 3]), b = try T.f32(TestData.uniform(12, seed: 5), [3, 4])
    let c = try T.f32([Float](repeating: .nan, count: 8), [2, 4])
    try T.cpu.matmul(a, b, into: c)
    XCTAssertFalse(try T.read(c).contains { $0.isNaN })
  }

  func test_matmul_batchedWithBroadcastOperands_matchesPerBatchNaive() throws {
    let (batch, m, k, n) = (3, 5, 7, 9)
    let a3 = TestData.uniform(batch * m * k, seed: 6), b3 = TestData.uniform(batch * k * n, seed: 7)
    let a2 = Array(a3.prefix(m * k)), b2 = Array(b3.prefix(k * n))
    // (A batched, B shared) takes the folded tall-gemm path; the others loop over the batch.
    let cases: [(String, [Float], [Int], [Float], [Int], Bool)] = [
      ("both batched", a3, [batch, m, k], b3, [batch, k, n], false),
      ("B broadcast (rank 2)", a3, [batch, m, k], b2, [k, n], false),
      ("B broadcast (batch 1)", a3, [batch, m, k], b2, [1, k, n], false),
      ("A broadcast", a2, [m, k], b3, [batch, k, n], false),
      ("B broadcast, Aᵀ", a3, [batch, k, m], b2, [k, n], true),
    ]
    for (what, a, ashape, b, bshape, ta) in cases {
      let c = try T.zeros([batch, m, n])
      try T.cpu.matmul(try T.f32(a, ashape), try T.f32(b, bshape), into: c, transposeA: ta,
                       transposeB: false, alpha: 1, beta: 0)
      var ref = [Float]()
      for i in 0..<batch {
        let ai = ashape.count == 3 && ashape[0] == batch ? Array(a[(i * m * k)..<((i + 1) * m * k)]) : a
        let bi = bshape.count == 3 && bshape[0] == batch ? Array(b[(i * k * n)..<((i + 1) * k * n)]) : b
        ref += T.matmul(ai, bi, [], m: m, n: n, k: k, ta: ta, tb: false)
      }
      T.assertClose(ref, try T.read(c), nmse: Tol.f32NMSE, maxAbs: Tol.f32MaxAbs, what)
    }
  }

  func test_matmul_emptyInnerDimension_scalesC() throws {
    let a = try T.cpu.allocate([3, 0], .f32), b = try T.cpu.allocate([0, 2], .f32)
    let c = try T.f32([1, 2, 3, 4, 5, 6], [3, 2])
    try T.cpu.matmul(a, b, into: c, transposeA: false, transposeB: false, alpha: 1, beta: 2)
    XCTAssertEqual(try T.read(c), [2, 4, 6, 8, 10, 12])
  }

  /// L = Σ (A·B)⊙R: dA = R·Bᵀ and dB = Aᵀ·R, expressed with the transpose flags.
  func test_matmul_inputGradientOrientation_matchesFiniteDifferences() throws {
    let (m, k, n) = (4, 6, 5)
    let a = TestData.uniform(m * k, seed: 8), b = TestData.uniform(k * n, seed: 9)
    let r = TestData.uniform(m * n, seed: 10)
    let tb = try T.f32(b, [k, n]), tr = try T.f32(r, [m, n]), ta = try T.f32(a, [m, k])
    let da = try T.zeros([m, k]), db = try T.zeros([k, n])
    try T.cpu.matmul(tr, tb, into: da, transposeA: false, transposeB: true)
    try T.cpu.matmul(ta, tr, into: db, transposeA: true, transposeB: false)
    func loss(_ a: [Float], _ b: [Float]) throws -> Double {
      let c = try T.zeros([m, n])
      try T.cpu.matmul(try T.f32(a, [m, k]), try T.f32(b, [k, n]), into: c)
      return T.dot(try T.read(c), r)
    }
    let numA = try T.numericGradient(a, at: Array(0..<(m * k)), h: 1e-2) { try loss($0, b) }
    let numB = try T.numericGradient(b, at: Array(0..<(k * n)), h: 1e-2) { try loss(a, $0) }
    T.assertClose(numA, try T.read(da), nmse: Tol.gradNMSE, maxAbs: Tol.gradMaxAbs, "dA")
    T.assertClose(numB, try T.read(db), nmse: Tol.gradNMSE, maxAbs: Tol.gradMaxAbs, "dB")
  }

  // MARK: - NF4

  static let (wRows, wCols) = (48, 36)  // 1728 elements: 27 blocks of 64

  func test_nf4_roundTripErrorIsWithinHalfACodeGap() {
    let w = TestData.uniform(Self.wRows * Self.wCols, seed: 20, -2, 2)
    let (packed, absmax) = NF4.quantize(w)
    let back = NF4.dequantize(packed: packed, absmax: absmax, count: w.count)
    for e in 0..<w.count {
      XCTAssertLessThanOrEqual(abs(w[e] - back[e]), Tol.nf4HalfGap * absmax[e / 64] * 1.0001, "\(e)")
    }
  }

  func test_nf4_packsFirstElementInHighNibble() {
    // −1 → code 0, +1 → code 15, 0 → code 7 within one block whose absmax is 1.
    let (packed, absmax) = NF4.quantize([1, -1, 0, 1] + [Float](repeating: 0, count: 60))
    XCTAssertEqual(absmax, [1])
    XCTAssertEqual(packed[0], 0xF0)
    XCTAssertEqual(packed[1], 0x7F)
  }

  func test_dequantizeNF4_equalsNF4Dequantize() throws {
    // A partial last block (2000 = 31·64 + 16) and block size 32 exercise the block walk.
    // Double quantisation: 40×50 / 6 = 334 blocks, two nested scales.
    for (rows, cols, block, dq) in [(40, 50, 64, false), (40, 50, 32, false), (7, 2, 64, false),
                                    (40, 50, 6, true), (7, 2, 64, true)] {
      let w = TestData.uniform(rows * cols, seed: 21, -3, 3)
      let q = try NF4Weight.quantizing(w, rows: rows, cols: cols, on: T.cpu, blockSize: block, doubleQuant: dq)
      let out = try T.zeros([rows, cols])
      try T.cpu.dequantizeNF4(q, into: out)
      let (packed, plain) = NF4.quantize(w, blockSize: block)
      let absmax = dq ? NF4DoubleQuant.encode(plain).decoded : plain
      XCTAssertEqual(try T.read(out), NF4.dequantize(packed: packed, absmax: absmax,
                                                     count: w.count, blockSize: block), "block \(block) dq \(dq)")
    }
  }

  func test_nf4Kernel_oddElementRanges_matchWholeDequantize() {
    let w = TestData.uniform(130, seed: 22)
    let (packed, absmax) = NF4.quantize(w, blockSize: 16)
    let whole = NF4.dequantize(packed: packed, absmax: absmax, count: 130, blockSize: 16)
    for range in [3..<7, 15..<16, 16..<17, 1..<130, 31..<97] {
      var out = [Float](repeating: .nan, count: range.count)
      packed.withUnsafeBufferPointer { p in
        absmax.withUnsafeBufferPointer { a in
          out.withUnsafeMutableBufferPointer { o in
            NF4Kernel.dequantize(p.baseAddress!, a.baseAddress!, blockSize: 16, elements: range,
                                 into: o.baseAddress!)
          }
        }
      }
      XCTAssertEqual(out, Array(whole[range]), "\(range)")
    }
  }

  func test_matmulNF4_equalsMatmulWithDequantisedWeight() throws {
    let (m, rows, cols) = (5, Self.wRows, Self.wCols)
    let w = TestData.uniform(rows * cols, seed: 23)
    let q = try NF4Weight.quantizing(w, rows: rows, cols: cols, on: T.cpu)
    let dense = try T.zeros([rows, cols])
    try T.cpu.dequantizeNF4(q, into: dense)
    for transposeB in [true, false] {
      let (k, n) = transposeB ? (cols, rows) : (rows, cols)
      let x = try T.f32(TestData.uniform(m * k, seed: 24), [m, k])
      let y0 = TestData.uniform(m * n, seed: 25)
      let y = try T.f32(y0, [m, n]), ref = try T.f32(y0, [m, n])
      try T.cpu.matmulNF4(x, q, into: y, transposeB: transposeB, alpha: 1.5, beta: 0.5)
      try T.cpu.matmul(x, dense, into: ref, transposeA: false, transposeB: transposeB,
                       alpha: 1.5, beta: 0.5)
      T.assertClose(try T.read(ref), try T.read(y), nmse: Tol.f32NMSE, maxAbs: Tol.f32MaxAbs,
                    "transposeB \(transposeB)")
    }
  }

  func test_matmulNF4_panelSeams_matchDense() throws {
    // A private backend with tiny panels: 2 full panels plus a remainder, and an odd column
    // count so panels start at odd elements (mid-byte).
    let cpu = CPUBackend()
    cpu.nf4PanelElements = 1000
    let cols = 37, rows = 2 * (1000 / cols) + 6
    let w = TestData.uniform(rows * cols, seed: 26)
    let q = try NF4Weight.quantizing(w, rows: rows, cols: cols, on: cpu, blockSize: 16)
    let dense = try cpu.allocate([rows, cols])
    try cpu.dequantizeNF4(q, into: dense)
    for transposeB in [true, false] {
      let (k, n) = transposeB ? (cols, rows) : (rows, cols)
      let x = try cpu.tensor(TestData.uniform(3 * k, seed: 27), shape: [3, k])
      let y0 = TestData.uniform(3 * n, seed: 31)
      let y = try cpu.tensor(y0, shape: [3, n]), ref = try cpu.tensor(y0, shape: [3, n])
      try cpu.matmulNF4(x, q, into: y, transposeB: transposeB, alpha: 0.5, beta: 2)
      try cpu.matmul(x, dense, into: ref, transposeA: false, transposeB: transposeB,
                     alpha: 0.5, beta: 2)
      T.assertClose(try cpu.floats(ref), try cpu.floats(y), nmse: Tol.f32NMSE,
                    maxAbs: Tol.f32MaxAbs, "transposeB \(transposeB)")
    }
  }

  /// A 16-bit x widened in chunks of rows (tiny `widenPanelElements`: 3 chunks, the last
  /// partial) over several NF4 panels equals the dense product of the rounded x.
  func test_matmulNF4_halfActivations_rowChunks_matchDense() throws {
    let cpu = CPUBackend()
    cpu.nf4PanelElements = 600
    let (rows, cols, m) = (40, 37, 11)
    cpu.widenPanelElements = 4 * max(rows, cols)
    let q = try NF4Weight.quantizing(TestData.uniform(rows * cols, seed: 32), rows: rows, cols: cols,
                                     on: cpu, blockSize: 16)
    let dense = try cpu.allocate([rows, cols])
    try cpu.dequantizeNF4(q, into: dense)
    for type in [DType.bf16, .f16] {
      for transposeB in [true, false] {
        let (k, n) = transposeB ? (cols, rows) : (rows, cols)
        let h = TestData.half(TestData.uniform(m * k, seed: 33), type)
        let x = try cpu.tensor(h.bits, shape: [m, k], type), xr = try cpu.tensor(h.values, shape: [m, k])
        let y0 = TestData.uniform(m * n, seed: 34)
        let y = try cpu.tensor(y0, shape: [m, n]), ref = try cpu.tensor(y0, shape: [m, n])
        try cpu.matmulNF4(x, q, into: y, transposeB: transposeB, alpha: 0.5, beta: 2)
        try cpu.matmul(xr, dense, into: ref, transposeA: false, transposeB: transposeB, alpha: 0.5, beta: 2)
        T.assertClose(try cpu.floats(ref), try cpu.floats(y), nmse: Tol.f32NMSE,
                      maxAbs: Tol.f32MaxAbs, "\(type) transposeB \(transposeB)")
      }
    }
  }

  /// Forward y = x·Wᵀ; its input gradient R·W is matmulNF4 without transposeB.
  func test_matmulNF4_inputGradientOrientation_matchesFiniteDifferences() throws {
    let (m, rows, cols) = (3, 8, 16)
    let q = try NF4Weight.quantizing(TestData.uniform(rows * cols, seed: 28), rows: rows,
                                     cols: cols, on: T.cpu, blockSize: 32)
    let x = TestData.uniform(m * cols, seed: 29), r = TestData.uniform(m * rows, seed: 30)
    let dx = try T.zeros([m, cols])
    try T.cpu.matmulNF4(try T.f32(r, [m, rows]), q, into: dx, transposeB: false, alpha: 1, beta: 0)
    let num = try T.numericGradient(x, at: Array(0..<x.count), h: 1e-2) { xv in
      let y = try T.zeros([m, rows])
      try T.cpu.matmulNF4(try T.f32(xv, [m, cols]), q, into: y, transposeB: true, alpha: 1, beta: 0)
      return T.dot(try T.read(y), r)
    }
    T.assertClose(num, try T.read(dx), nmse: Tol.gradNMSE, maxAbs: Tol.gradMaxAbs, "dx")
  }
}
