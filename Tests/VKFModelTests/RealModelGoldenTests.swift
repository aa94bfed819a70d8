import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport

/// The golden fixture of tools/make_smollm2_fixtures.py: transformers on the fp32 HF copy of
/// the shared SmolLM2-135M-Instruct GGUF.
struct SmolLM2Golden: Decodable {
  struct Prompt: Decodable {
    var name: String
    var text: String
    var ids: [Int]
    var argmax: [Int]
    var top5_indices: [[Int]]
    var top5_values: [[Float]]
  }
  struct CorpusEntry: Decodable {
    var text: String
    /// The shared tokenizer.json's ids.
    var ids: [Int]
    /// The ids with llama.cpp's "smollm" pre-tokenizer (digits split first).
    var llamacpp_ids: [Int]
  }
  var prompts: [Prompt]
  var corpus: [CorpusEntry]

  static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("Fixtures/smollm2")

  static func load() throws -> SmolLM2Golden {
    try JSONDecoder().decode(SmolLM2Golden.self,
                             from: Data(contentsOf: directory.appendingPathComponent("golden.json")))
  }

  /// Last-position logits (V) of prompt `index`.
  static func lastLogits(_ index: Int) throws -> [Float] {
    try SafetensorsFile(contentsOf: directory.appendingPathComponent("last_logits.safetensors"))
      .floats("prompt\(index)")
  }

  /// The shared model directory beside the repository, or a skip.
  static func sharedModelDirectory() throws -> String {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("../../../shared/models/smollm2-135m-instruct").standardized.path
    guard FileManager.default.fileExists(atPath: path + "/model.Q4_1.gguf") else {
      throw XCTSkip("shared SmolLM2 model absent at \(path); real-model tests skipped")
    }
    return path
  }
}

/// SmolLM2-135M-Instruct loaded end to end through `ModelLoader` (GGUF dequantisation, q/k
/// un-permutation, tokenizer, chat template) against transformers.
final class RealModelGoldenTests: XCTestCase {
  /// Last-position logits vs transformers: both sides run f32 on identically dequantised
  /// weights, so only summation order differs (30 layers, k ≤ 1536). Measured NMSE ≤ 1.6e-12
  /// on CPU, ≤ 5.4e-12 on lavapipe (printed by the test). 1e-9 is the bound; a wrong q/k
  /// un-permutation or RoPE table gives NMSE ≳ 1e-2.
  static let logitsNMSE = 1e-9
  /// Max abs error on logits of magnitude ≲ 30: 1e-3 is ~3e-5 relative, 15× the f32
  /// reordering noise measured (≤ 5.4e-5 CPU, ≤ 6.7e-5 lavapipe) and far below any real bug.
  static let logitsMaxAbs = 1e-3
  /// Top-5 logit values vs transformers at every position (same reasoning as logitsMaxAbs).
  static let topValueTolerance: Float = 1e-3

  /// One model per test process: dequantising 135M parameters takes seconds.
  nonisolated(unsafe) static var cached: (LoadedModel, DecoderModel)?

  private func cpuModel() throws -> (LoadedModel, DecoderModel) {
    if let cached = Self.cached { return cached }
    let loaded = try ModelLoader.load(try SmolLM2Golden.sharedModelDirectory())
    let weights = try DecoderWeights(from: loaded.weights, shape: loaded.shape, backend: TestBackends.cpu)
    let result = (loaded, try DecoderModel(weights: weights))
    Self.cached = result
    return result
  }

  func test_smolLM2_cpu_matchesTransformers() throws {
    let (loaded, model) = try cpuModel()
    try check(loaded: loaded, model: model)
  }

  func test_smolLM2_vulkan_matchesTransformers() throws {
    let backend = try ModelFixtures.vulkanOrSkip()
    let (loaded, _) = try cpuModel()
    let start = Date()
    let weights = try DecoderWeights(from: loaded.weights, shape: loaded.shape, backend: backend)
    // lavapipe with validation takes ~50 s for all three prompts; the 12-token one covers
    // every kernel, the others only add length. VKF_SLOW_TESTS=1 runs all three.
    let all = ProcessInfo.processInfo.environment["VKF_SLOW_TESTS"] == "1"
    try check(loaded: loaded, model: try DecoderModel(weights: weights), only: all ? nil : "plain")
    print(String(format: "%@: upload + %@ %.1f s", backend.name, all ? "3 prompts" : "1 prompt", Date().timeIntervalSince(start)))
  }

  /// Compares every prompt (or only the one named `only`).
  private func check(loaded: LoadedModel, model: DecoderModel, only: String? = nil) throws {
    let golden = try SmolLM2Golden.load()
    let vocab = loaded.shape.vocab
    for (index, prompt) in golden.prompts.enumerated() where only == nil || prompt.name == only {
      let ids = loaded.tokenizer.encode(prompt.text)
      XCTAssertEqual(ids, prompt.ids, "\(prompt.name): token ids")
      try model.forward(ids: prompt.ids.map(Int32.init), batch: 1)
      let logits = try model.backend.floats(try XCTUnwrap(model.logits))
      let rows = prompt.ids.count
      XCTAssertEqual(logits.count, rows * vocab)

      let expected = try SmolLM2Golden.lastLogits(index)
      let last = Array(logits[(rows - 1) * vocab ..< rows * vocab])
      let nmse = Compare.nmse(expected, last), maxAbs = Compare.maxAbs(expected, last)
      print(String(format: "%@ on %@: %d tokens, last-position logits NMSE %.2e max-abs %.2e",
                   prompt.name, model.backend.name, rows, nmse, maxAbs))
      if let why = Compare.check(expected, last, nmse: Self.logitsNMSE, maxAbs: Self.logitsMaxAbs) {
        XCTFail("\(prompt.name) last-position logits on \(model.backend.name): \(why)")
      }

      var worstTop = Float(0)
      for t in 0 ..< rows {
        let row = logits[t * vocab ..< (t + 1) * vocab]
        let top = row.indices.sorted { row[$0] > row[$1] || (row[$0] == row[$1] && $0 < $1) }.prefix(5)
          .map { $0 - t * vocab }
        XCTAssertEqual(top.first, prompt.argmax[t], "\(prompt.name) argmax at position \(t)")
        XCTAssertEqual(top, prompt.top5_indices[t], "\(prompt.name) top-5 indices at position \(t)")
        for (i, value) in prompt.top5_values[t].enumerated() {
          worstTop = max(worstTop, abs(row[row.startIndex + prompt.top5_indices[t][i]] - value))
        }
      }
      XCTAssertLessThanOrEqual(worstTop, Self.topValueTolerance, "\(prompt.name) top-5 values")
    }
  }
}
