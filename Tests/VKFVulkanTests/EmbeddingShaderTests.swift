import Foundation
import XCTest
import VKFCore
import VKFCPU
import VKFTestSupport
@testable import VKFVulkan

// Shader unit tests of embedding.comp and embedding_back.comp against the CPU backend.

final class EmbeddingShaderTests: XCTestCase {
  /// The lookup copies values: bit-exact.
  static let lookupNMSE = 0.0
  static let lookupMaxAbs = 0.0
  /// The backward adds the same terms in the same (token) order as the CPU: bit-exact too,
  /// but allow one rounding per add in case a compiler fuses or reorders.
  static let scatterNMSE = 1e-12
  static let scatterMaxAbs = 1e-6

  func testEmbeddingPush_matchesShaderBlock() {
    XCTAssertEqual(MemoryLayout<EmbeddingPush>.size, 3 * 4)  // n, cols, vocab
  }

  private func check(n: Int, vocab: Int, cols: Int, idUpper: Int32? = nil, seed: UInt64,
                     file: StaticString = #filePath, line: UInt = #line) throws {
    let ids = TestData.ints(n, seed: seed, upper: idUpper ?? Int32(vocab))
    let table = TestData.uniform(vocab * cols, seed: seed + 1)
    let dy = TestData.uniform(n * cols, seed: seed + 2)
    let dt0 = TestData.uniform(vocab * cols, seed: seed + 3)  // pre-filled: dTable accumulates
    let r = try BlockCheck.both(file: file, line: line) { be in
      let it = try be.tensor(ids, shape: [n]), tt = try be.tensor(table, shape: [vocab, cols])
      let out = try be.allocate([n, cols])
      try be.embedding(ids: it, table: tt, into: out)
      let dyt = try be.tensor(dy, shape: [n, cols]), dt = try be.tensor(dt0, shape: [vocab, cols])
      try be.embeddingBackward(ids: it, dOut: dyt, dTable: dt)
      return [try be.floats(out), try be.floats(dt)]
    }
    BlockCheck.assertClose((cpu: [r.cpu[0]], vk: [r.vk[0]]), nmse: Self.lookupNMSE,
                           maxAbs: Self.lookupMaxAbs, "embedding n \(n) cols \(cols)",
                           file: file, line: line)
    BlockCheck.assertClose((cpu: [r.cpu[1]], vk: [r.vk[1]]), nmse: Self.scatterNMSE,
                           maxAbs: Self.scatterMaxAbs, "embeddingBackward n \(n) cols \(cols)",
                           file: file, line: line)
  }

  func testEmbedding_oddShapes_matchesCPU() throws {
    try check(n: 1, vocab: 1, cols: 1, seed: 1)
    try check(n: 7, vocab: 67, cols: 7, seed: 2)
    try check(n: 67, vocab: 1000, cols: 257, seed: 3)
  }

  /// A frozen table stored f16 / bf16: rows widened exactly to the values the bits hold, on
  /// both backends (odd column counts, so rows start mid-word).
  func testEmbedding_halfTable_widensExactly() throws {
    for t in [DType.f16, .bf16] {
      let (n, vocab, cols) = (37, 53, 67)
      let ids = TestData.ints(n, seed: 6, upper: Int32(vocab))
      let table = TestData.half(TestData.uniform(vocab * cols, seed: 7), t)
      let expected = ids.flatMap { Array(table.values[(Int($0) * cols)..<((Int($0) + 1) * cols)]) }
      let r = try BlockCheck.both { be in
        let out = try be.allocate([n, cols])
        try be.embedding(ids: try be.tensor(ids, shape: [n]),
                         table: try be.tensor(table.bits, shape: [vocab, cols], t), into: out)
        return [try be.floats(out)]
      }
      XCTAssertEqual(r.cpu[0], expected, "cpu \(t)")
      XCTAssertEqual(r.vk[0], expected, "vulkan \(t)")
    }
  }

  /// Many tokens share few ids; 300 tokens span two 256-token scan chunks.
  func testEmbeddingBackward_repeatedIds_accumulatesInTokenOrder() throws {
    try check(n: 40, vocab: 7, cols: 67, idUpper: 5, seed: 4)
    try check(n: 300, vocab: 9, cols: 300, idUpper: 3, seed: 5)
  }

  /// Out-of-range ids: NaN rows forward, skipped backward (the CPU throws instead).
  func testEmbedding_outOfRangeId_givesNaNRowAndSkipsGradient() throws {
    let vk = try BlockCheck.vulkan()
    let ids = try vk.tensor([Int32(1), 5, -1], shape: [3])
    let table = try vk.tensor(TestData.uniform(3 * 2, seed: 1), shape: [3, 2])
    let out = try vk.allocate([3, 2])
    try vk.embedding(ids: ids, table: table, into: out)
    let o = try vk.floats(out)
    XCTAssertFalse(o[0].isNaN)
    XCTAssertTrue(o[2].isNaN && o[3].isNaN && o[4].isNaN && o[5].isNaN)
    let dt = try vk.tensor([Float](repeating: 0, count: 6), shape: [3, 2])
    try vk.embeddingBackward(ids: ids, dOut: try vk.tensor([Float](repeating: 1, count: 6), shape: [3, 2]),
                             dTable: dt)
    XCTAssertEqual(try vk.floats(dt), [0, 0, 1, 1, 0, 0])
  }
}
