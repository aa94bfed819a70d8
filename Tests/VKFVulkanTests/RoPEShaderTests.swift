import Foundation
import XCTest
import VKFCore
import VKFCPU
import VKFTestSupport
@testable import VKFVulkan

// Shader unit tests of rope.comp (forward and backward) against the CPU backend.

final class RoPEShaderTests: XCTestCase {
  /// Angles up to ~8000 rad: both backends form the same f32 angle, then differ only by
  /// sin/cos implementations (range-reduced on the GPU) → a few 1e-7 absolute per term.
  static let ropeNMSE = 1e-11
  static let ropeMaxAbs = 1e-5

  func testRoPEPush_matchesShaderBlock() {
    XCTAssertEqual(MemoryLayout<RoPEPush>.size, 4 * 4)  // pairs, heads, halfDim, sign
  }

  private func check(tokens: Int, heads: Int, headDim: Int, theta: Double, maxPos: Int32,
                     seed: UInt64, file: StaticString = #filePath, line: UInt = #line) throws {
    let x = TestData.uniform(tokens * heads * headDim, seed: seed)
    let pos = TestData.ints(tokens, seed: seed + 1, upper: maxPos)
    let inv = RoPE.inverseFrequencies(headDim: headDim, theta: theta)
    let shape = [tokens, heads, headDim]
    let r = try BlockCheck.both(file: file, line: line) { be in
      let xt = try be.tensor(x, shape: shape), pt = try be.tensor(pos, shape: [tokens])
      let ft = try be.tensor(inv, shape: [headDim / 2])
      let out = try be.allocate(shape), back = try be.allocate(shape)
      try be.rope(xt, positions: pt, invFreq: ft, into: out)
      try be.ropeBackward(xt, positions: pt, invFreq: ft, into: back)
      // In place: rotate forward then back → x again.
      let inPlace = try be.tensor(x, shape: shape)
      try be.rope(inPlace, positions: pt, invFreq: ft, into: inPlace)
      try be.ropeBackward(inPlace, positions: pt, invFreq: ft, into: inPlace)
      return [try be.floats(out), try be.floats(back), try be.floats(inPlace)]
    }
    BlockCheck.assertClose(r, nmse: Self.ropeNMSE, maxAbs: Self.ropeMaxAbs,
                           "rope \(shape) maxPos \(maxPos)", file: file, line: line)
    if let msg = Compare.check(x, r.vk[2], nmse: Self.ropeNMSE, maxAbs: Self.ropeMaxAbs) {
      XCTFail("rope then ropeBackward is not the identity: \(msg)", file: file, line: line)
    }
  }

  func testRoPE_smallPositions_matchesCPU() throws {
    try check(tokens: 5, heads: 3, headDim: 8, theta: 10_000, maxPos: 16, seed: 1)
    try check(tokens: 1, heads: 1, headDim: 2, theta: 10_000, maxPos: 4, seed: 2)
  }

  func testRoPE_largePositions_matchesCPU() throws {
    try check(tokens: 67, heads: 2, headDim: 64, theta: 500_000, maxPos: 8192, seed: 3)
    try check(tokens: 7, heads: 5, headDim: 34, theta: 10_000, maxPos: 32_768, seed: 4)
  }
}
