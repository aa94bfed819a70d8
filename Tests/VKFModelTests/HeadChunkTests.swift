import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport

/// The LM head and its loss run chunk by chunk over rows: every chunking gives the losses and
/// gradients of one whole-batch chunk, for the mean loss (SFT) and for per-token weights
/// (DPO), with the head trained (full fine-tuning: its gradient accumulates per chunk) and
/// frozen (the weighted backward scales the forward's dL/dhidden), on CPU and Vulkan.
final class HeadChunkTests: XCTestCase {
  /// Chunked and whole passes differ only in how the head's weight gradient (and nothing
  /// else) is summed: per chunk, then across chunks. f32 reassociation over ≤ 16 rows.
  static let chunkTolerance = ModelTolerance(nmse: 1e-11, maxAbs: 1e-6)
  /// 5 rows: not a divisor of the golden batch's 2 × 8 tokens, so the last chunk is short.
  static let oddChunk = 5
  /// Trained: every parameter but the head's (tied: the embedding) — the frozen-head path.
  static let frozenHead: TrainableParameters = .named([
    "model.layers.0.mlp.down_proj.weight", "model.layers.1.self_attn.q_proj.weight", "model.norm.weight",
  ])

  func test_chunkedHead_equalsWholeHead_cpu() throws { try checkChunking(on: TestBackends.cpu) }

  func test_chunkedHead_equalsWholeHead_vulkan() throws { try checkChunking(on: try ModelFixtures.vulkanOrSkip()) }

  private func checkChunking(on backend: Backend) throws {
    for name in ["llama_untied", "qwen2_tied"] {
      let g = try GoldenCase.load(name)
      let ids = try g.ids, targets = try g.targets
      let weights = (0..<ids.count).map { Float(($0 * 7) % 5) - 1.5 }  // signs and zeros
      for trainable in [TrainableParameters.all, Self.frozenHead] {
        for weighted in [false, true] {
          func run(_ chunk: Int?) throws -> (losses: [Float], grads: [String: [Float]]) {
            let m = try g.model(on: backend, trainable: trainable, headChunkTokens: chunk)
            try m.forward(ids: ids, targets: targets, batch: g.batch, computeGradients: true, weightedLater: weighted)
            let losses = try m.tokenLosses()
            if weighted { try m.backward(tokenWeights: weights) } else { try m.backward() }
            return (losses, try ModelFixtures.gradients(of: m))
          }
          let whole = try run(nil), chunked = try run(Self.oddChunk)
          let what = "\(name) \(trainable == .all ? "trained" : "frozen") head, weighted \(weighted) on \(backend.name)"
          let tol = Self.chunkTolerance
          if let why = Compare.check(whole.losses, chunked.losses, nmse: tol.nmse, maxAbs: tol.maxAbs) {
            XCTFail("losses, \(what): \(why)")
          }
          XCTAssertEqual(Set(whole.grads.keys), Set(chunked.grads.keys), what)
          XCTAssertFalse(whole.grads.isEmpty, what)
          for (param, e) in whole.grads.sorted(by: { $0.key < $1.key }) {
            XCTAssertTrue(e.contains { $0 != 0 }, "\(param) has a gradient, \(what)")
            if let why = Compare.check(e, chunked.grads[param] ?? [], nmse: tol.nmse, maxAbs: tol.maxAbs) {
              XCTFail("\(param), \(what): \(why)")
            }
          }
        }
      }
    }
  }

  /// A pass with targets never holds more than one chunk of logits: the arena with chunks of
  /// 5 rows is smaller than the whole batch's by (N − 5)·V floats (64-aligned).
  func test_chunkedArena_holdsOneChunkOfLogits() throws {
    let g = try GoldenCase.load("llama_untied")
    func bytes(_ chunk: Int?) throws -> Int {
      let m = try g.model(on: TestBackends.cpu, headChunkTokens: chunk)
      try m.forward(ids: try g.ids, targets: try g.targets, batch: g.batch, computeGradients: true)
      return try XCTUnwrap(m.activationStorage).byteCount
    }
    let n = try g.ids.count, v = g.shape.vocab
    func aligned(_ x: Int) -> Int { (x + 63) / 64 * 64 }
    XCTAssertEqual(try bytes(nil) - bytes(Self.oddChunk), 4 * (aligned(n * v) - aligned(Self.oddChunk * v)))
  }

  /// The weighted and plain backward refuse each other's forward.
  func test_backwardKinds_mustMatchForward() throws {
    let g = try GoldenCase.load("llama_tied")
    let m = try g.model(on: TestBackends.cpu)
    let ids = try g.ids, targets = try g.targets
    try m.forward(ids: ids, targets: targets, batch: g.batch, computeGradients: true, weightedLater: true)
    XCTAssertThrowsError(try m.backward())
    try m.forward(ids: ids, targets: targets, batch: g.batch, computeGradients: true)
    XCTAssertThrowsError(try m.backward(tokenWeights: [Float](repeating: 1, count: ids.count)))
    try m.backward()
  }

  /// 64-row multiples keep every chunk view 256-byte aligned; at least 64 rows.
  func test_defaultChunk_followsVocabulary() {
    XCTAssertEqual(DecoderModel.defaultHeadChunkTokens(vocab: 49_152), 640)
    XCTAssertEqual(DecoderModel.defaultHeadChunkTokens(vocab: 128_256), 256)
    XCTAssertEqual(DecoderModel.defaultHeadChunkTokens(vocab: 1 << 30), 64)
  }
}
