import Foundation
import XCTest
import VKFCore
import VKFCPU
import VKFTestSupport

/// The CPU's blocked fused attention (`CPUBackend.attention`, `attentionBackward`) against
/// the textbook T×T computation in Double, across query blocks (T above the 128-row block),
/// grouped-query heads and odd sizes.
final class FusedAttentionTests: XCTestCase {
  /// f32 sums of ≤ 200 products and exp/log in f32 against Double: ~1e-7 relative per term.
  static let nmse = 1e-10
  static let maxAbs = 1e-4

  private func check(_ s: AttentionReference.Shape, seed: UInt64, file: StaticString = #filePath, line: UInt = #line) throws {
    let be = TestBackends.cpu
    let scale = 1 / Float(s.headDim).squareRoot()
    let qv = TestData.uniform(s.qCount, seed: seed, -2, 2), kv = TestData.uniform(s.kvCount, seed: seed + 1, -2, 2)
    let vv = TestData.uniform(s.kvCount, seed: seed + 2), dov = TestData.uniform(s.qCount, seed: seed + 3)
    let expected = AttentionReference.run(s, q: qv, k: kv, v: vv, dOut: dov, scale: scale)
    let qShape = [s.batch, s.heads, s.tokens, s.headDim], kvShape = [s.batch, s.kvHeads, s.tokens, s.headDim]
    let q = try be.tensor(qv, shape: qShape), k = try be.tensor(kv, shape: kvShape), v = try be.tensor(vv, shape: kvShape)
    let out = try be.allocate(qShape), lse = try be.allocate([s.batch, s.heads, s.tokens])
    let lengths = s.keyLengths.isEmpty ? nil : try be.tensor(s.keyLengths.map { Int32($0) }, shape: [s.batch])
    let mask = AttentionMask(causal: s.causal, window: s.window, softcap: Float(s.softcap), keyLengths: lengths)
    try be.attention(q: q, k: k, v: v, scale: scale, mask: mask, into: out, lse: lse)
    let dOut = try be.tensor(dov, shape: qShape), delta = try be.allocate([s.batch, s.heads, s.tokens])
    let dq = try be.allocate(qShape), dk = try be.allocate(kvShape), dv = try be.allocate(kvShape)
    try be.attentionBackward(dOut, q: q, k: k, v: v, out: out, lse: lse, scale: scale, mask: mask,
                             delta: delta, dq: dq, dk: dk, dv: dv)
    for (name, e, a) in [("out", expected.out, try be.floats(out)), ("lse", expected.lse, try be.floats(lse)),
                         ("dq", expected.dq, try be.floats(dq)), ("dk", expected.dk, try be.floats(dk)),
                         ("dv", expected.dv, try be.floats(dv))] {
      if let why = Compare.check(e, a, nmse: Self.nmse, maxAbs: Self.maxAbs) {
        XCTFail("\(s) \(name): \(why)", file: file, line: line)
      }
    }
  }

  func test_fusedAttention_matchesTheT2Reference() throws {
    try check(.init(batch: 2, heads: 4, kvHeads: 2, tokens: 150, headDim: 8), seed: 1)   // two query blocks, GQA
    try check(.init(batch: 1, heads: 3, kvHeads: 1, tokens: 5, headDim: 4), seed: 11)    // G = 3
    try check(.init(batch: 1, heads: 2, kvHeads: 2, tokens: 2, headDim: 16), seed: 21)   // two tokens
    try check(.init(batch: 1, heads: 1, kvHeads: 1, tokens: 257, headDim: 3), seed: 31)  // 3 blocks, short last
  }

  /// Sliding windows (Mistral, Qwen2's upper layers): two keys, a window inside one query
  /// block, one that crosses the 128-row blocks, one as long as T (= causal). (Window 1 is
  /// the one-token case below for every query: dq = dk = 0 up to rounding.)
  func test_slidingWindow_matchesTheT2Reference() throws {
    try check(.init(batch: 1, heads: 2, kvHeads: 1, tokens: 9, headDim: 4, window: 2), seed: 41)
    try check(.init(batch: 2, heads: 4, kvHeads: 2, tokens: 37, headDim: 8, window: 5), seed: 51)
    try check(.init(batch: 1, heads: 2, kvHeads: 1, tokens: 300, headDim: 6, window: 150), seed: 61)
    try check(.init(batch: 1, heads: 1, kvHeads: 1, tokens: 20, headDim: 8, window: 20), seed: 71)
  }

  /// Gemma 2's soft-capped scores (cap·tanh(s / cap)) with and without a window, across the
  /// 128-row blocks: caps 1 and 2 bend scores of up to ±4 hard, so the tanh's derivative
  /// in the backward matters.
  func test_softcap_matchesTheT2Reference() throws {
    try check(.init(batch: 2, heads: 4, kvHeads: 2, tokens: 150, headDim: 8, softcap: 1), seed: 91)
    try check(.init(batch: 1, heads: 2, kvHeads: 1, tokens: 37, headDim: 8, window: 5, softcap: 2), seed: 101)
  }

  /// Bidirectional attention (BERT) with right padding: every query sees the row's real keys
  /// (padded queries too, as BERT's attention mask does), across the 128-row blocks, a row
  /// without padding and one with a single real key; and causal attention with key lengths.
  func test_bidirectional_andKeyLengths_matchTheT2Reference() throws {
    try check(.init(batch: 3, heads: 4, kvHeads: 2, tokens: 150, headDim: 8, causal: false, keyLengths: [150, 97, 1]),
              seed: 111)
    try check(.init(batch: 2, heads: 2, kvHeads: 1, tokens: 9, headDim: 4, causal: false), seed: 121)
    try check(.init(batch: 2, heads: 2, kvHeads: 2, tokens: 20, headDim: 8, softcap: 2, keyLengths: [13, 20]), seed: 131)
  }

  /// Key lengths outside [1, T] are refused by name; a window needs causal attention.
  func test_badMasks_areRefused() throws {
    let be = TestBackends.cpu
    let q = try be.allocate([1, 1, 4, 2]), out = try be.allocate([1, 1, 4, 2]), lse = try be.allocate([1, 1, 4])
    XCTAssertThrowsError(try be.attention(q: q, k: q, v: q, scale: 1,
                                          mask: AttentionMask(causal: false, keyLengths: try be.tensor([Int32(0)], shape: [1])),
                                          into: out, lse: lse)) { XCTAssertTrue("\($0)".contains("key length 0"), "\($0)") }
    XCTAssertThrowsError(try be.attention(q: q, k: q, v: q, scale: 1, mask: AttentionMask(causal: false, window: 2),
                                          into: out, lse: lse))
  }

  /// The unfused path's causal softmax with a window equals the fused op's probabilities
  /// (out · reconstructed): rows sum to 1 over exactly the window, 0 elsewhere, KV cache
  /// offsets (tk > tq) included.
  func test_causalSoftmax_window_masksOutsideTheWindow() throws {
    let be = TestBackends.cpu
    let (tq, tk, window) = (4, 9, 3)
    let x = try be.tensor(TestData.uniform(2 * tq * tk, seed: 81), shape: [2, tq, tk])
    let out = try be.allocate([2, tq, tk])
    try be.causalSoftmax(x, scale: 0.7, window: window, into: out)
    let o = try be.floats(out), xv = try be.floats(x)
    for r in 0..<(2 * tq) {
      let p = r % tq + (tk - tq), lo = p + 1 - window
      let row = Array(o[(r * tk)..<((r + 1) * tk)])
      for j in 0..<tk where j < lo || j > p { XCTAssertEqual(row[j], 0, "row \(r) key \(j)") }
      let e = (lo...p).map { exp(0.7 * Double(xv[r * tk + $0])) }, sum = e.reduce(0, +)
      for j in lo...p { XCTAssertEqual(Double(row[j]), e[j - lo] / sum, accuracy: 1e-6, "row \(r) key \(j)") }
    }
  }

  /// One token: its only key has probability 1, so out = v, dv = dOut, and dq = dk = 0 up to
  /// f32 rounding of dOut·v − dOut·out (|x| ≤ 1e-6 for inputs in ±2).
  func test_oneToken_outIsV_andQKGradientsVanish() throws {
    let be = TestBackends.cpu
    func random(_ shape: [Int], _ seed: UInt64) throws -> Tensor {
      try be.tensor(TestData.uniform(shape.reduce(1, *), seed: seed, -2, 2), shape: shape)
    }
    let q = try random([1, 2, 1, 16], 5), k = try random([1, 1, 1, 16], 6)
    let v = try random([1, 1, 1, 16], 7), dOut = try random([1, 2, 1, 16], 8)
    let out = try be.allocate([1, 2, 1, 16]), lse = try be.allocate([1, 2, 1]), delta = try be.allocate([1, 2, 1])
    let dq = try be.allocate([1, 2, 1, 16]), dk = try be.allocate([1, 1, 1, 16]), dv = try be.allocate([1, 1, 1, 16])
    try be.attention(q: q, k: k, v: v, scale: 0.25, into: out, lse: lse)
    try be.attentionBackward(dOut, q: q, k: k, v: v, out: out, lse: lse, scale: 0.25, delta: delta, dq: dq, dk: dk, dv: dv)
    let vs = try be.floats(v), d = try be.floats(dOut)
    XCTAssertEqual(try be.floats(out), vs + vs)
    XCTAssertEqual(try be.floats(dv), zip(d[0..<16], d[16...]).map { $0 + $1 })
    XCTAssertLessThanOrEqual((try be.floats(dq) + be.floats(dk)).map(abs).max() ?? 1, 1e-6)
  }

  /// Outputs may not overlap inputs; k/v must match q's batch, tokens and head size.
  func test_badGeometry_isRejected() throws {
    let be = TestBackends.cpu
    let q = try be.allocate([1, 4, 6, 8]), k = try be.allocate([1, 3, 6, 8]), v = try be.allocate([1, 3, 6, 8])
    let out = try be.allocate([1, 4, 6, 8]), lse = try be.allocate([1, 4, 6])
    XCTAssertThrowsError(try be.attention(q: q, k: k, v: v, scale: 1, into: out, lse: lse), "4 heads over 3 kv heads")
    let k2 = try be.allocate([1, 2, 6, 8]), v2 = try be.allocate([1, 2, 5, 8])
    XCTAssertThrowsError(try be.attention(q: q, k: k2, v: v2, scale: 1, into: out, lse: lse), "v has 5 tokens")
    XCTAssertThrowsError(try be.attention(q: q, k: k2, v: k2, scale: 1, into: q, lse: lse), "out is q")
  }
}
