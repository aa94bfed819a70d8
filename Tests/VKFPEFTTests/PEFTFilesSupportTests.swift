import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport
@testable import VKFPEFT

/// The committed PEFT fixture (tools/check_peft_adapter.py make-fixture): a tiny random
/// Llama, two adapters saved by peft with nonzero B (lora: q/v/down; dora: rsLoRA + DoRA on
/// all seven projections) and peft's logits for `ids`.
enum PEFTFixture {
  static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("Fixtures/peftio")
  static var baseDirectory: URL { directory.appendingPathComponent("base") }
  static func adapter(_ name: String) -> URL { directory.appendingPathComponent(name) }

  /// expected.safetensors: ids (T) I32 and logits.<case> (T, V).
  static func expected() throws -> SafetensorsFile {
    try SafetensorsFile(contentsOf: directory.appendingPathComponent("expected.safetensors"))
  }

  static func ids() throws -> [Int32] { try expected().floats("ids").map { Int32($0) } }

  /// The base model's shape, from its config.json.
  static func shape(tied: Bool = false) throws -> TransformerShape {
    var s = try TransformerShape(config: try DecoderConfig.load(from: baseDirectory))
    s.tiedEmbeddings = tied
    return s
  }

  /// The base weights (frozen) on `backend`; `tied` drops the LM head and reuses the embedding.
  static func base(on backend: Backend, tied: Bool = false) throws -> DecoderWeights {
    try DecoderWeights(from: try SafetensorsCheckpoint.open(directory: baseDirectory), shape: try shape(tied: tied),
                     backend: backend)
  }

  /// Logits (T, V) of one sequence.
  static func logits(_ weights: DecoderWeights, ids: [Int32]) throws -> [Float] {
    let model = try DecoderModel(weights: weights)
    try model.forward(ids: ids, batch: 1)
    return try weights.backend.floats(try XCTUnwrap(model.logits))
  }
}

/// A temporary directory removed at deinit.
final class PEFTTestDirectory {
  let url: URL
  init() throws {
    url = FileManager.default.temporaryDirectory
      .appendingPathComponent("vkf-peftio-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
  }
  deinit { try? FileManager.default.removeItem(at: url) }
  func path(_ name: String) -> URL { url.appendingPathComponent(name) }
  /// Names in the directory, hidden (temporary) ones included, sorted.
  func contents() throws -> [String] { try FileManager.default.contentsOfDirectory(atPath: url.path).sorted() }
}

/// Shared helpers of the PEFT file, merge and writer tests.
enum PEFTTestSupport {
  /// The Vulkan backend, or a skip (a failure with VKF_REQUIRE_VULKAN=1).
  static func vulkanOrSkip() throws -> Backend {
    if let vk = TestBackends.vulkan { return vk }
    if ProcessInfo.processInfo.environment["VKF_REQUIRE_VULKAN"] == "1" {
      XCTFail("VKF_REQUIRE_VULKAN=1 but no Vulkan backend: \(TestBackends.vulkanResult)")
    }
    throw XCTSkip("no Vulkan device")
  }

  /// Fills every adapter tensor of `lora` with seeded values (B nonzero, magnitudes near 1),
  /// so saving, loading and merging are tested on something other than the B = 0 start.
  static func randomize(_ lora: LoRAModel, seed: UInt64, amplitude: Float = 0.3) throws {
    var values: [String: [Float]] = [:]
    for (i, t) in lora.trainableTensors.enumerated() {
      let v = TestData.uniform(t.value.count, seed: seed &+ UInt64(i), -amplitude, amplitude)
      values[t.name] = t.name.hasSuffix(LoRAModel.magnitudeKey) ? v.map { 1 + $0 } : v
    }
    try lora.load(values)
  }

  /// Every adapter tensor by PEFT key.
  static func tensors(_ lora: LoRAModel) throws -> [String: [Float]] {
    Dictionary(uniqueKeysWithValues: try lora.trainableTensors.map { ($0.name, try lora.weights.backend.floats($0.value)) })
  }

  /// Checks `actual` against `expected`, failing with `what` and the worst element, and
  /// returns "what nmse … maxAbs …" for the test log.
  @discardableResult
  static func compare(_ what: String, _ expected: [Float], _ actual: [Float], nmse: Double, maxAbs: Double,
                      file: StaticString = #filePath, line: UInt = #line) -> String {
    XCTAssertEqual(expected.count, actual.count, "\(what): element count", file: file, line: line)
    if let why = Compare.check(expected, actual, nmse: nmse, maxAbs: maxAbs) {
      XCTFail("\(what): \(why)", file: file, line: line)
    }
    return String(format: "%@ nmse %.2e maxAbs %.2e", what, Compare.nmse(expected, actual),
                  Compare.maxAbs(expected, actual))
  }
}
