import Foundation
import XCTest
import VKFCore
import VKFCPU
import VKFTestSupport
@testable import VKFVulkan

// Shader unit tests of grouped_matmul_nf4.comp against the CPU backend's groupedMatmulNF4
// and, independently of it, the CPU's dense groupedMatmul on the dequantised experts.
// Legend: E experts, R expert rows (of a and c), r rows of each expert's matrix, C its
// columns.

final class MoENF4ShaderTests: LinearShaderTestCase {
  /// The decode is exact on both sides (codebook value × absmax, one f32 multiply of the same
  /// f32 values; double-quantised absmax decoded with the same rounded product and add), so
  /// only the order of the k-term f32 sums differs (tiled K loop, K slices, OpenBLAS):
  /// `LinearCheck`'s dot-product bounds, f32 NMSE 1e-10 and max-abs 1e-4·√k.
  static let nmse = LinearCheck.f32NMSE
  static func maxAbs(k: Int) -> Double { LinearCheck.f32MaxAbs(k: k) }

  /// E = 4 experts of r = 15 rows × C = 21 columns: 315 elements each, odd, so experts 1 and 3
  /// start mid-byte and absmax blocks straddle experts.
  static let e = 4, r = 15, cols = 21

  func testGroupedMatmulNF4Push_matchesShaderBlock() {
    XCTAssertEqual(MemoryLayout<GroupedMatmulNF4Push>.size, 12 * 4)  // m … beta + absmax
  }

  // MARK: - Helpers

  /// Offsets over R rows: segments 0 ..< 7, an empty one, 7 ..< 20, 20 ..< 29 (tiles span
  /// segments); rows 29 ..< 33 lie past offsets[E] and must stay untouched.
  static let unaligned = (offsets: [Int32(0), 7, 7, 20, 29], rows: 33)

  /// Segments starting at multiples of `align` (the row tile: one expert per tile, as
  /// moeDispatch pads them), expert 1 empty, and 5 spare rows.
  static func aligned(_ align: Int) -> (offsets: [Int32], rows: Int) {
    ([0, align, align, 2 * align, 3 * align].map(Int32.init), 3 * align + 5)
  }

  /// Runs groupedMatmulNF4 on Vulkan and the CPU and compares, plus the CPU's dense
  /// groupedMatmul on the dequantised stack (b (E, r, C)), which checks the CPU twin too.
  private func check(_ layout: (offsets: [Int32], rows: Int), transposeB: Bool, beta: Float, blockSize: Int,
                     doubleQuant: Bool, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) throws {
    let (e, r, cols, rows) = (Self.e, Self.r, Self.cols, layout.rows)
    let (k, n) = transposeB ? (cols, r) : (r, cols)
    let values = TestData.uniform(e * r * cols, seed: seed, -0.5, 0.5)
    let av = TestData.uniform(rows * k, seed: seed + 1), c0 = TestData.uniform(rows * n, seed: seed + 2)
    let run = { (be: any Backend) throws -> [[Float]] in
      let w = try NF4Weight.quantizing(values, rows: e * r, cols: cols, on: be, blockSize: blockSize,
                                       doubleQuant: doubleQuant)
      let c = try be.tensor(c0, shape: [rows, n])
      try be.groupedMatmulNF4(try be.tensor(av, shape: [rows, k]), w, experts: e, into: c,
                              offsets: try be.tensor(layout.offsets, shape: [e + 1]), transposeB: transposeB, beta: beta)
      return [try be.floats(c)]
    }
    let vk = try LinearCheck.vulkan(), cpu = TestBackends.cpu
    let got = try run(vk)[0], ref = try run(cpu)[0]
    let what = "groupedMatmulNF4 tB \(transposeB) β \(beta) block \(blockSize) dq \(doubleQuant) rows \(rows)"
    // Rows past offsets[E] keep c's previous values, bit for bit.
    let end = Int(layout.offsets[e]) * n
    XCTAssertEqual(Array(got[end...]), Array(c0[end...]), "\(what): rows after offsets[E]", file: file, line: line)
    if let msg = Compare.check(ref, got, nmse: Self.nmse, maxAbs: Self.maxAbs(k: k)) {
      XCTFail("\(what) vs CPU: \(msg)", file: file, line: line)
    }
    // The dense reference: the same weight dequantised on the CPU, one matrix per expert.
    let wq = try NF4Weight.quantizing(values, rows: e * r, cols: cols, on: cpu, blockSize: blockSize,
                                      doubleQuant: doubleQuant)
    let dense = try cpu.allocate([e * r, cols])
    try cpu.dequantizeNF4(wq, into: dense)
    let cd = try cpu.tensor(c0, shape: [rows, n])
    try cpu.groupedMatmul(try cpu.tensor(av, shape: [rows, k]), try dense.reshaped([e, r, cols]), into: cd,
                          offsets: try cpu.tensor(layout.offsets, shape: [e + 1]), transposeA: false,
                          transposeB: transposeB, beta: beta)
    if let msg = Compare.check(try cpu.floats(cd), got, nmse: Self.nmse, maxAbs: Self.maxAbs(k: k)) {
      XCTFail("\(what) vs CPU dense groupedMatmul: \(msg)", file: file, line: line)
    }
  }

  // MARK: - Cases

  /// Both orientations, β = 0 and 1, plain absmax (block 64 and 6), on segments that share
  /// row tiles and include an empty expert.
  func testGroupedMatmulNF4_bothOrientations_plainAbsmax_matchCPU() throws {
    for transposeB in [true, false] {
      try check(Self.unaligned, transposeB: transposeB, beta: 0, blockSize: 64, doubleQuant: false, seed: 10)
      try check(Self.unaligned, transposeB: transposeB, beta: 1, blockSize: 6, doubleQuant: false, seed: 11)
    }
  }

  /// Double-quantised absmax: block 2 gives 630 blocks, three nested scales (one group
  /// straddling experts); block 64 one partial code word.
  func testGroupedMatmulNF4_doubleQuantised_matchCPU() throws {
    for transposeB in [true, false] {
      try check(Self.unaligned, transposeB: transposeB, beta: 0, blockSize: 2, doubleQuant: true, seed: 20)
      try check(Self.unaligned, transposeB: transposeB, beta: 1, blockSize: 64, doubleQuant: true, seed: 21)
    }
  }

  /// Segments padded to the row tile (`moeRowAlignment`): one expert per tile.
  func testGroupedMatmulNF4_tileAlignedSegments_matchCPU() throws {
    let layout = Self.aligned(try LinearCheck.vulkan().moeRowAlignment)
    try check(layout, transposeB: true, beta: 0, blockSize: 64, doubleQuant: true, seed: 30)
    try check(layout, transposeB: false, beta: 1, blockSize: 64, doubleQuant: false, seed: 31)
  }

  /// K slices of 5 (odd: slices start mid-byte and mid-block) accumulated through β, as
  /// lavapipe's loop cap takes them (in slices of 4096), on a one-workgroup grid.
  func testGroupedMatmulNF4_kSlicedAndGridStrided_matchesCPU() throws {
    VulkanBackend.groupedSliceOverride = 5
    VulkanBackend.gridLimitOverride = (1, 1, 1)
    defer {
      VulkanBackend.groupedSliceOverride = nil
      VulkanBackend.gridLimitOverride = nil
    }
    for transposeB in [true, false] {
      try check(Self.unaligned, transposeB: transposeB, beta: 0, blockSize: 6, doubleQuant: true, seed: 40)
      try check(Self.unaligned, transposeB: transposeB, beta: 1, blockSize: 64, doubleQuant: false, seed: 41)
    }
  }

  /// A recorded call replays with new offsets (written on the device between replays): the
  /// host never reads them.
  func testGroupedMatmulNF4_recorded_followsNewOffsets() throws {
    let vk = try LinearCheck.vulkan(), cpu = TestBackends.cpu
    let (e, r, cols, rows) = (Self.e, Self.r, Self.cols, Self.unaligned.rows)
    let values = TestData.uniform(e * r * cols, seed: 50, -0.5, 0.5), av = TestData.uniform(rows * cols, seed: 51)
    let w = try NF4Weight.quantizing(values, rows: e * r, cols: cols, on: vk, doubleQuant: true)
    let a = try vk.tensor(av, shape: [rows, cols]), off = try vk.allocate([e + 1], .i32)
    let c = try vk.tensor([Float](repeating: 0, count: rows * r), shape: [rows, r])
    let recording = try vk.record {
      try vk.groupedMatmulNF4(a, w, experts: e, into: c, offsets: off, transposeB: true, beta: 0)
    }
    for offsets in [Self.unaligned.offsets, [0, 0, 12, 12, 33]] {
      try vk.upload(offsets, to: off)
      try vk.replay([recording])
      let wc = try NF4Weight.quantizing(values, rows: e * r, cols: cols, on: cpu, doubleQuant: true)
      let ref = try cpu.tensor([Float](repeating: 0, count: rows * r), shape: [rows, r])
      try cpu.groupedMatmulNF4(try cpu.tensor(av, shape: [rows, cols]), wc, experts: e, into: ref,
                               offsets: try cpu.tensor(offsets, shape: [e + 1]), transposeB: true, beta: 0)
      LinearCheck.assertClose(try cpu.floats(ref), try vk.floats(c), k: cols, "replay with offsets \(offsets)")
    }
  }
}
