import Foundation
import XCTest
import VKFCore
import VKFCPU
import VKFTestSupport
@testable import VKFVulkan

// Shader unit tests of attention.comp, attention_back_dq.comp and attention_back_dkdv.comp
// against the CPU twin (CPUBackend.attention / attentionBackward).

final class AttentionShaderTests: XCTestCase {
  /// Tile sums (≤ 128 products of head size, online-softmax rescaling) in another order
  /// than the CPU's sgemm panels: f32 rounding, ~1e-6 relative.
  static let nmse = 1e-10
  static let maxAbs = 1e-4

  func testPushStruct_matchesShaderBlock() {
    // batch, heads, kv_heads, tokens, tiles, scale, window, softcap, causal, use_key_lengths
    XCTAssertEqual(MemoryLayout<AttentionPush>.size, 10 * 4)
  }

  private func check(batch: Int, heads: Int, kvHeads: Int, tokens: Int, headDim: Int, seed: UInt64,
                     window: Int = 0, softcap: Float = 0, causal: Bool = true, keyLengths: [Int32] = [],
                     file: StaticString = #filePath, line: UInt = #line) throws {
    let qShape = [batch, heads, tokens, headDim], kvShape = [batch, kvHeads, tokens, headDim]
    let qn = qShape.reduce(1, *), kvn = kvShape.reduce(1, *)
    let scale = 1 / Float(headDim).squareRoot()
    let qv = TestData.uniform(qn, seed: seed, -2, 2), kv = TestData.uniform(kvn, seed: seed + 1, -2, 2)
    let vv = TestData.uniform(kvn, seed: seed + 2), dov = TestData.uniform(qn, seed: seed + 3)
    let r = try BlockCheck.both(file: file, line: line) { be in
      let q = try be.tensor(qv, shape: qShape), k = try be.tensor(kv, shape: kvShape), v = try be.tensor(vv, shape: kvShape)
      let out = try be.allocate(qShape), lse = try be.allocate([batch, heads, tokens])
      let lengths = keyLengths.isEmpty ? nil : try be.tensor(keyLengths, shape: [batch])
      let mask = AttentionMask(causal: causal, window: window, softcap: softcap, keyLengths: lengths)
      try be.attention(q: q, k: k, v: v, scale: scale, mask: mask, into: out, lse: lse)
      let dOut = try be.tensor(dov, shape: qShape), delta = try be.allocate([batch, heads, tokens])
      let dq = try be.allocate(qShape), dk = try be.allocate(kvShape), dv = try be.allocate(kvShape)
      try be.attentionBackward(dOut, q: q, k: k, v: v, out: out, lse: lse, scale: scale, mask: mask,
                               delta: delta, dq: dq, dk: dk, dv: dv)
      return try [out, lse, delta, dq, dk, dv].map { try be.floats($0) }
    }
    BlockCheck.assertClose(r, nmse: Self.nmse, maxAbs: Self.maxAbs,
                           "attention B\(batch) NH\(heads) KVH\(kvHeads) T\(tokens) HS\(headDim) window \(window) softcap \(softcap) "
                             + "causal \(causal) keys \(keyLengths)",
                           file: file, line: line)
  }

  /// Partial last tiles (T not a multiple of the tile), grouped-query heads, two tokens (with one
  /// token dq and dk are exactly 0: FusedAttentionTests checks that case).
  func testAttention_oddSizesAndGQA_matchCPU() throws {
    try check(batch: 2, heads: 4, kvHeads: 2, tokens: 37, headDim: 8, seed: 1)
    try check(batch: 1, heads: 3, kvHeads: 1, tokens: 17, headDim: 5, seed: 11)
    try check(batch: 1, heads: 2, kvHeads: 2, tokens: 2, headDim: 16, seed: 21)
  }

  /// Sliding windows: two keys, a window shorter than a tile, one spanning tiles (the first
  /// key tile and the last query tile move), and T itself (plain causal). (Window 1 leaves
  /// one key per query: dq = dk = 0 up to rounding, FusedAttentionTests' one-token case.)
  func testAttention_slidingWindow_matchesCPU() throws {
    try check(batch: 1, heads: 2, kvHeads: 1, tokens: 9, headDim: 4, seed: 51, window: 2)
    try check(batch: 2, heads: 4, kvHeads: 2, tokens: 37, headDim: 8, seed: 61, window: 5)
    try check(batch: 1, heads: 3, kvHeads: 1, tokens: 70, headDim: 64, seed: 71, window: 19)
    try check(batch: 1, heads: 2, kvHeads: 2, tokens: 20, headDim: 8, seed: 81, window: 20)
  }

  /// Soft-capped scores (Gemma 2): partial tiles and GQA, and with a window across tiles.
  func testAttention_softcap_matchesCPU() throws {
    try check(batch: 2, heads: 4, kvHeads: 2, tokens: 37, headDim: 8, seed: 91, softcap: 1)
    try check(batch: 1, heads: 2, kvHeads: 1, tokens: 40, headDim: 8, seed: 101, window: 19, softcap: 2)
  }

  /// Bidirectional attention (BERT) with right padding — partial tiles, a single real key,
  /// padded key tiles skipped — and causal attention with key lengths.
  func testAttention_bidirectionalAndKeyLengths_matchCPU() throws {
    try check(batch: 3, heads: 4, kvHeads: 2, tokens: 37, headDim: 8, seed: 141, causal: false, keyLengths: [37, 20, 1])
    try check(batch: 1, heads: 2, kvHeads: 1, tokens: 40, headDim: 8, seed: 151, causal: false)
    try check(batch: 2, heads: 2, kvHeads: 2, tokens: 20, headDim: 8, seed: 161, softcap: 2, keyLengths: [13, 20])
  }

  /// SmolLM2's head size (64: 16-row tiles) and Llama's (128: the tile shrinks to fit shared memory).
  func testAttention_modelHeadSizes_matchCPU() throws {
    try check(batch: 1, heads: 3, kvHeads: 1, tokens: 40, headDim: 64, seed: 31)
    try check(batch: 1, heads: 2, kvHeads: 1, tokens: 20, headDim: 128, seed: 41)
  }
}
