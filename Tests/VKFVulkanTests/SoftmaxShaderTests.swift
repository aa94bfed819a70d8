import Foundation
import XCTest
import VKFCore
import VKFCPU
import VKFTestSupport
@testable import VKFVulkan

// Shader unit tests of causal_softmax.comp and causal_softmax_back.comp against the CPU.

final class SoftmaxShaderTests: XCTestCase {
  func testPushStructs_matchShaderBlocks() {
    XCTAssertEqual(MemoryLayout<CausalSoftmaxPush>.size, 7 * 4)      // rows, tq, tk, scale, window, rowsPerGroup, firstRow
  }

  private func check(_ shape: [Int], scale: Float, seed: UInt64, inPlace: Bool = false, window: Int = 0,
                     file: StaticString = #filePath, line: UInt = #line) throws {
    let n = shape.reduce(1, *)
    let x = TestData.uniform(n, seed: seed, -4, 4), dy = TestData.uniform(n, seed: seed + 1)
    let r = try BlockCheck.both(file: file, line: line) { be in
      let xt = try be.tensor(x, shape: shape)
      let y = inPlace ? xt : try be.allocate(shape)
      try be.causalSoftmax(xt, scale: scale, window: window, into: y)
      let dyt = try be.tensor(dy, shape: shape)
      let dx = inPlace ? dyt : try be.allocate(shape)
      try be.causalSoftmaxBackward(dyt, out: y, scale: scale, into: dx)
      return [try be.floats(y), try be.floats(dx)]
    }
    BlockCheck.assertClose(r, nmse: BlockCheck.reductionNMSE, maxAbs: BlockCheck.reductionMaxAbs,
                           "causalSoftmax \(shape)", file: file, line: line)
    // Masked entries are exactly 0 on Vulkan.
    let tq = shape[shape.count - 2], tk = shape[shape.count - 1]
    for row in 0..<(n / tk) {
      let p = row % tq + tk - tq
      let masked = Array((p + 1)..<tk) + (window > 0 ? Array(0..<max(0, p + 1 - window)) : [])
      for j in masked where r.vk[0][row * tk + j] != 0 || r.vk[1][row * tk + j] != 0 {
        XCTFail("masked [\(row), \(j)] not 0", file: file, line: line); return
      }
    }
  }

  func testCausalSoftmax_squareAttention_matchesCPU() throws {
    try check([2, 3, 5, 5], scale: 0.125, seed: 1)
    try check([1, 67, 67], scale: 1, seed: 2)
    try check([1, 1], scale: 1, seed: 3)
  }

  /// tq < tk: a KV cache of tk − tq earlier tokens, row i sees keys ≤ i + tk − tq.
  func testCausalSoftmax_kvCacheShape_matchesCPU() throws {
    try check([3, 4, 9], scale: 0.5, seed: 4)
    try check([2, 7, 257], scale: 0.25, seed: 5)
  }

  func testCausalSoftmax_singleQuery_matchesCPU() throws {
    try check([4, 1, 1000], scale: 0.1, seed: 6)
    try check([1, 1, 7], scale: 2, seed: 7)
  }

  /// Sliding windows, with and without a KV cache offset, and one past every row's length.
  func testCausalSoftmax_slidingWindow_matchesCPU() throws {
    try check([2, 3, 9, 9], scale: 0.5, seed: 9, window: 3)
    try check([3, 4, 300], scale: 0.25, seed: 10, window: 100)
    try check([1, 5, 5], scale: 1, seed: 11, window: 1)
    try check([1, 6, 6], scale: 1, seed: 12, window: 50)
  }

  func testCausalSoftmax_inPlace_matchesCPU() throws {
    try check([2, 5, 300], scale: 0.3, seed: 8, inPlace: true)
  }
}
