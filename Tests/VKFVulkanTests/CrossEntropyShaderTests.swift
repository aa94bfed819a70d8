import Foundation
import XCTest
import VKFCore
import VKFCPU
import VKFTestSupport
@testable import VKFVulkan

// Shader unit tests of cross_entropy.comp against the CPU backend.

final class CrossEntropyShaderTests: XCTestCase {
  func testCrossEntropyPush_matchesShaderBlock() {
    XCTAssertEqual(MemoryLayout<CrossEntropyPush>.size, 6 * 4)  // …, normFromBuffer, softcap
  }

  private func check(n: Int, vocab: Int, ignored: Set<Int> = [], normalizer: Float? = nil,
                     withGradient: Bool = true, softcap: Float = 0, seed: UInt64,
                     file: StaticString = #filePath, line: UInt = #line) throws {
    let ignoreIndex: Int32 = -100
    let logits = TestData.uniform(n * vocab, seed: seed, -8, 8)
    var targets = TestData.ints(n, seed: seed + 1, upper: Int32(vocab))
    for i in ignored { targets[i] = ignoreIndex }
    let r = try BlockCheck.both(file: file, line: line) { be in
      let lt = try be.tensor(logits, shape: [n, vocab]), tt = try be.tensor(targets, shape: [n])
      let losses = try be.tensor(TestData.uniform(n, seed: 99), shape: [n])  // overwritten
      let d = withGradient ? try be.tensor(TestData.uniform(n * vocab, seed: 98), shape: [n, vocab]) : nil
      try be.crossEntropy(logits: lt, targets: tt, ignoreIndex: ignoreIndex, normalizer: LossNormalizer(normalizer),
                          softcap: softcap, losses: losses, dLogits: d)
      return [try be.floats(losses)] + (try d.map { [try be.floats($0)] } ?? [])
    }
    BlockCheck.assertClose(r, nmse: BlockCheck.reductionNMSE, maxAbs: BlockCheck.reductionMaxAbs,
                           "crossEntropy n \(n) vocab \(vocab)", file: file, line: line)
  }

  func testCrossEntropy_oddShapes_matchesCPU() throws {
    try check(n: 1, vocab: 1, seed: 1)
    try check(n: 3, vocab: 7, seed: 2)
    try check(n: 67, vocab: 257, seed: 3)
  }

  func testCrossEntropy_largeVocab_matchesCPU() throws {
    try check(n: 3, vocab: 5000, ignored: [1], seed: 4)
  }

  func testCrossEntropy_ignoredTargets_countedNormalizer_matchesCPU() throws {
    try check(n: 67, vocab: 67, ignored: [0, 5, 6, 66], seed: 5)
    try check(n: 7, vocab: 1000, ignored: [2], withGradient: false, seed: 6)
  }

  /// Soft-capped logits (Gemma 2's final_logit_softcapping; logits ±8 against caps 3 and
  /// 30), with ignored rows, and in place over the logits.
  func testCrossEntropy_softcap_matchesCPU() throws {
    try check(n: 67, vocab: 257, ignored: [0, 5], softcap: 3, seed: 12)
    try check(n: 7, vocab: 1000, softcap: 30, seed: 13)
    let (n, vocab) = (5, 300)
    let logits = TestData.uniform(n * vocab, seed: 14, -8, 8), targets = TestData.ints(n, seed: 15, upper: Int32(vocab))
    let r = try BlockCheck.both { be in
      let lt = try be.tensor(logits, shape: [n, vocab]), losses = try be.allocate([n])
      try be.crossEntropy(logits: lt, targets: try be.tensor(targets, shape: [n]), ignoreIndex: -100,
                          normalizer: .targetCount, softcap: 3, losses: losses, dLogits: lt)
      let capped = try be.tensor(logits, shape: [n, vocab])
      try be.scale(capped, by: 0.7, softcap: 2, into: capped)  // the capped scores of cached decoding
      return [try be.floats(losses), try be.floats(lt), try be.floats(capped)]
    }
    BlockCheck.assertClose(r, nmse: BlockCheck.reductionNMSE, maxAbs: BlockCheck.reductionMaxAbs,
                           "crossEntropy with softcap in place; scale with softcap")
  }

  func testCrossEntropy_explicitNormalizer_matchesCPU() throws {
    try check(n: 7, vocab: 67, ignored: [3], normalizer: 16, seed: 7)
  }

  func testCrossEntropy_everyTargetIgnored_isAllZero() throws {
    try check(n: 5, vocab: 7, ignored: Set(0..<5), seed: 8)
    let vk = try BlockCheck.vulkan()
    let losses = try vk.tensor([Float](repeating: 7, count: 2), shape: [2])
    let d = try vk.tensor([Float](repeating: 7, count: 6), shape: [2, 3])
    try vk.crossEntropy(logits: try vk.tensor(TestData.uniform(6, seed: 1), shape: [2, 3]),
                        targets: try vk.tensor([Int32(-100), -100], shape: [2]), ignoreIndex: -100,
                        normalizer: nil, losses: losses, dLogits: d)
    XCTAssertEqual(try vk.floats(losses), [0, 0])
    XCTAssertEqual(try vk.floats(d), [Float](repeating: 0, count: 6))
  }

  /// dLogits may overwrite the logits it is computed from.
  func testCrossEntropy_dLogitsAliasesLogits_matchesCPU() throws {
    let n = 5, vocab = 300
    let logits = TestData.uniform(n * vocab, seed: 9, -5, 5)
    let targets = TestData.ints(n, seed: 10, upper: Int32(vocab))
    let r = try BlockCheck.both { be in
      let lt = try be.tensor(logits, shape: [n, vocab]), tt = try be.tensor(targets, shape: [n])
      let losses = try be.allocate([n])
      try be.crossEntropy(logits: lt, targets: tt, ignoreIndex: -100, normalizer: nil,
                          losses: losses, dLogits: lt)
      return [try be.floats(losses), try be.floats(lt)]
    }
    BlockCheck.assertClose(r, nmse: BlockCheck.reductionNMSE, maxAbs: BlockCheck.reductionMaxAbs,
                           "crossEntropy in place")
  }

  func testCrossEntropy_badNormalizer_throwsLikeCPU() throws {
    let vk = try BlockCheck.vulkan()
    let l = try vk.allocate([1, 3]), t = try vk.tensor([Int32(0)], shape: [1])
    XCTAssertThrowsError(try vk.crossEntropy(logits: l, targets: t, ignoreIndex: -100, normalizer: 0,
                                             losses: try vk.allocate([1]), dLogits: nil))
  }
}
