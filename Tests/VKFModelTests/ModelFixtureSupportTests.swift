import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport

/// One golden configuration written by tools/make_fixtures.py.
struct GoldenCase {
  let name: String
  let shape: TransformerShape
  let weights: SafetensorsFile
  let expected: SafetensorsFile
  let batch = 2

  /// Hard-coded from tools/make_fixtures.py (COMMON + per-config extras) for the first three;
  /// the later cases read their shape from the config.json transformers wrote, through the
  /// loader's own path (`DecoderConfig` → `TransformerShape`: windows, q/k norm, head_dim).
  static func load(_ name: String) throws -> GoldenCase {
    let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("Fixtures/golden")
    let tied = name.hasSuffix("_tied"), bias = name.hasPrefix("qwen2")
    var shape = TransformerShape(hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 96,
                                 vocab: 97, rmsNormEps: 1e-6, ropeTheta: 10000,
                                 tiedEmbeddings: tied, qkvBias: bias)
    if !["llama_untied", "llama_tied", "qwen2_tied"].contains(name) {
      let url = dir.appendingPathComponent("\(name).config.json")
      shape = try TransformerShape(config: try DecoderConfig.load(from: url), file: url.path)
    }
    return GoldenCase(name: name, shape: shape,
                      weights: try SafetensorsFile(contentsOf: dir.appendingPathComponent("\(name).weights.safetensors")),
                      expected: try SafetensorsFile(contentsOf: dir.appendingPathComponent("\(name).expected.safetensors")))
  }

  static let names = ["llama_untied", "llama_tied", "qwen2_tied", "mistral_window", "qwen2_window", "qwen3_qknorm",
                      "gemma", "gemma2", "gemma3", "phi3"]

  /// Token ids (B, T), stored I32 (exact through f32: |id| < 2²⁴).
  var ids: [Int32] { get throws { try expected.floats("ids").map { Int32($0) } } }
  /// Targets (B, T) with −100 ignored, stored I32.
  var targets: [Int32] { get throws { try expected.floats("targets").map { Int32($0) } } }

  /// A model on `backend` with every parameter trainable unless told otherwise.
  func model(on backend: Backend, trainable: TrainableParameters = .all,
             checkpointing: Bool = false, headChunkTokens: Int? = nil,
             fusedAttention: Bool = true) throws -> DecoderModel {
    let w = try DecoderWeights(from: weights, shape: shape, backend: backend, trainable: trainable)
    return try DecoderModel(weights: w, checkpointing: checkpointing, headChunkTokens: headChunkTokens,
                          fusedAttention: fusedAttention)
  }
}

/// Helpers shared by the model tests.
enum ModelFixtures {
  /// The Vulkan backend, or a skip (a failure with VKF_REQUIRE_VULKAN=1).
  static func vulkanOrSkip() throws -> Backend {
    if let vk = TestBackends.vulkan { return vk }
    if ProcessInfo.processInfo.environment["VKF_REQUIRE_VULKAN"] == "1" {
      XCTFail("VKF_REQUIRE_VULKAN=1 but no Vulkan backend: \(TestBackends.vulkanResult)")
    }
    throw XCTSkip("no Vulkan device")
  }

  /// Checks every `grad.<name>` of `expected` against the model's gradients (the same names,
  /// each within `tolerance`, failing per tensor) and returns the worst (name, NMSE).
  static func checkGradients(of model: DecoderModel, against expected: SafetensorsFile, _ tolerance: ModelTolerance,
                             _ what: String) throws -> (name: String, nmse: Double) {
    let grads = try gradients(of: model)
    let names = Set(expected.tensorNames.filter { $0.hasPrefix("grad.") }.map { String($0.dropFirst(5)) })
    XCTAssertEqual(Set(grads.keys), names, "\(what): gradient names")
    var worst = (name: "", nmse: 0.0)
    for pname in names.sorted() {
      guard let actual = grads[pname] else { continue }
      let e = try expected.floats("grad." + pname)
      let err = Compare.nmse(e, actual)
      if err > worst.nmse { worst = (pname, err) }
      if let why = Compare.check(e, actual, nmse: tolerance.nmse, maxAbs: tolerance.maxAbs) {
        XCTFail("\(what) grad \(pname): \(why)")
      }
    }
    return worst
  }

  /// Downloads every gradient of a model by name.
  static func gradients(of model: DecoderModel) throws -> [String: [Float]] {
    try model.weights.gradients.mapValues { try model.backend.floats($0) }
  }
}

/// Bounds for one comparison (NMSE and max abs error).
struct ModelTolerance {
  let nmse: Double
  let maxAbs: Double
}
