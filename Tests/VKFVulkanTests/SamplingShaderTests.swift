import Foundation
import XCTest
import VKFCore
import VKFCPU
import VKFTestSupport
@testable import VKFVulkan

// Shader unit tests of sample_tokens.comp against its CPU twin, on a vocabulary that spans
// many chunks per invocation (49 153 = 3·2¹⁴ + 1, SmolLM2's size plus one) and on one
// smaller than the workgroup; every setting the parity suite covers at V = 1000 again.

final class SamplingShaderTests: XCTestCase {
  func testSampleTokensPush_matchesShaderBlock() {
    XCTAssertEqual(MemoryLayout<SampleTokensPush>.size, 11 * 4)  // rows … hasPresence, hasEntropy
  }

  func test_sampleTokens_equalsCPUTwin_largeAndTinyVocabularies() throws {
    guard let vk = TestBackends.vulkan else { throw XCTSkip("no Vulkan device") }
    let cpu = TestBackends.cpu
    let settings = [
      SamplingParameters(temperature: 0),
      SamplingParameters(temperature: 1, seed: 3),
      SamplingParameters(temperature: 0.9, topK: 50, topP: 0.9, repetitionPenalty: 1.3, seed: 4),
    ]
    for (vocab, rows) in [(49_153, 2), (37, 5)] {
      let logits = TestData.uniform(rows * vocab, seed: UInt64(vocab), -10, 10)
      var marks = [Int32](repeating: 0, count: rows * vocab)
      for i in stride(from: 0, to: marks.count, by: 11) { marks[i] = 1 }
      for p in settings {
        var got: [[Int32]] = []
        for b in [cpu as Backend, vk] {
          let l = try b.tensor(logits, shape: [rows, vocab]), presence = try b.tensor(marks, shape: [rows, vocab])
          let ids = try b.allocate([rows], .i32)
          var drawn: [Int32] = []
          for step in 0..<4 {
            var q = p; q.step = UInt32(step)
            try b.sampleTokens(logits: l, presence: presence, parameters: q, into: ids)
            drawn += try b.download(ids, as: Int32.self)
          }
          got.append(drawn + (try b.download(presence, as: Int32.self)))
        }
        XCTAssertEqual(got[0], got[1], "V \(vocab), \(p)")
      }
    }
    XCTAssertEqual(vk.validationMessages, [])
  }
}
