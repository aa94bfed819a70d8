import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport

/// BERT for sequence classification against transformers' BertForSequenceClassification in
/// f32 (tools/make_bert_fixtures.py): right-padded rows of three lengths, both token types,
/// three labels — logits, loss and the gradient of every parameter, on each backend.
final class BertGoldenTests: XCTestCase {
  /// Logits: ~40 dependent ops (two post-LN layers, exact GELU, pooler tanh); the shader's
  /// erf (A–S 7.1.26, |ε| ≤ 1.5e-7) is the largest difference. A wrong mask, head order or
  /// pooled row gives NMSE > 1e-3.
  static let logitsTolerance = ModelTolerance(nmse: 1e-10, maxAbs: 1e-5)
  /// Loss: one reduction more than the logits.
  static let lossRelativeTolerance: Float = 1e-5
  /// Gradients: twice the chain, with cancelling sums in the LayerNorm and embedding
  /// gradients; the same bound as the decoder goldens'.
  static let gradientTolerance = ModelTolerance(nmse: 1e-10, maxAbs: 2e-5)
  /// The key bias's gradient is 0 exactly (it adds q·b to every score of a query's row, and
  /// softmax ignores a constant per row): both sides are rounding noise (≤ 1e-8 measured), so
  /// only their size is compared — NMSE of noise against noise means nothing.
  static let zeroGradientMaxAbs = 1e-7

  func test_golden_bertClassifier_cpu() throws { try check(on: TestBackends.cpu) }
  func test_golden_bertClassifier_vulkan() throws { try check(on: try ModelFixtures.vulkanOrSkip()) }
  /// BertForMaskedLM: the transform, its LayerNorm and the tied decoder at 5 masked tokens;
  /// the word embeddings' gradient sums the input lookup's and the decoder's.
  func test_golden_bertMaskedLM_cpu() throws { try checkMaskedLM(on: TestBackends.cpu) }
  func test_golden_bertMaskedLM_vulkan() throws { try checkMaskedLM(on: try ModelFixtures.vulkanOrSkip()) }

  /// The attention mask matters: treating every row as full length moves the padded rows' logits.
  func test_golden_bertClassifier_ignoringPaddingFails() throws {
    let g = try BertGolden.load()
    let model = try g.model(on: TestBackends.cpu)
    let full = [Int32](repeating: Int32(g.tokens), count: g.batch)
    try model.forward(ids: g.ids, typeIDs: g.types, lengths: full, batch: g.batch)
    let e = try g.expected.floats("logits"), a = try model.logits()
    XCTAssertGreaterThan(Compare.nmse(Array(e[3...]), Array(a[3...])), 1e-3)
  }

  /// A bare BertModel checkpoint (no "bert." prefix, no pooler or classifier — what
  /// sentence-transformers saves) loads: the encoder's tensors by their own names, a pooler and
  /// classifier initialised from the seed (and reported), the same logits for a fixed seed.
  func test_bareEncoderCheckpoint_initialisesTheHead() throws {
    let g = try BertGolden.load()
    var bare: [String: [Float]] = [:], shapes: [String: [Int]] = [:]
    for name in g.weights.tensorNames where name.hasPrefix("bert.") && !name.contains("pooler") {
      let local = String(name.dropFirst(5))
      bare[local] = try g.weights.floats(name); shapes[local] = try g.weights.shape(of: name)
    }
    let source = InMemoryWeights(values: bare, shapes: shapes)
    let w = try BertWeights(source: source, config: g.config, numLabels: 2, backend: TestBackends.cpu,
                            trainable: false, seed: 5)
    XCTAssertEqual(Set(w.initialised), ["bert.pooler.dense.weight", "bert.pooler.dense.bias",
                                        "classifier.weight", "classifier.bias"])
    XCTAssertEqual(w.trainableTensors.map(\.name), ["classifier.weight", "classifier.bias"])
    let again = try BertWeights(source: source, config: g.config, numLabels: 2, backend: TestBackends.cpu,
                                trainable: false, seed: 5)
    let cpu = TestBackends.cpu
    XCTAssertEqual(try cpu.floats(try XCTUnwrap(w.classifier?.denseWeight)),
                   try cpu.floats(try XCTUnwrap(again.classifier?.denseWeight)))
    let pooler = try cpu.floats(try XCTUnwrap(w.pooler?.denseWeight))
    let std = (pooler.reduce(0.0) { $0 + Double($1 * $1) } / Double(pooler.count)).squareRoot()
    XCTAssertEqual(std, g.config.initializerRange, accuracy: 0.05 * g.config.initializerRange)
  }

  /// A classifier of another width than the model's labels is refused by name.
  func test_classifierOfAnotherWidth_isRefusedByName() throws {
    let g = try BertGolden.load()
    XCTAssertThrowsError(try BertWeights(source: g.weights, config: g.config, numLabels: 2, backend: TestBackends.cpu,
                                         trainable: true, seed: 0)) { e in
      XCTAssertTrue("\(e)".contains("classifier.weight"), "\(e)")
    }
  }

  private func checkMaskedLM(on backend: Backend) throws {
    let g = try BertGolden.load("tiny_mlm")
    let w = try BertWeights(source: g.weights, config: g.config, head: .maskedLM, backend: backend, trainable: true, seed: 0)
    XCTAssertTrue(w.initialised.isEmpty, "\(w.initialised)")
    let model = BertModel(weights: w)
    try w.zeroGradients()
    try model.forwardMaskedLM(ids: g.ids, typeIDs: g.types, lengths: g.lengths, batch: g.batch,
                              targets: try g.ints("targets"), computeGradients: true)
    let tol = Self.logitsTolerance
    if let m = Compare.check(try g.expected.floats("logits"), try model.maskedLMLogits(), nmse: tol.nmse,
                             maxAbs: tol.maxAbs) {
      XCTFail("logits: \(m)")
    }
    let loss = try model.loss(), expectedLoss = try g.expected.floats("loss")[0]
    XCTAssertEqual(loss, expectedLoss, accuracy: Self.lossRelativeTolerance * abs(expectedLoss))
    try model.backward()
    XCTAssertThrowsError(try model.maskedLMLogits())  // the backward reused the head's rows
    try compareGradients(w.named, g, backend)
    XCTAssertEqual(w.named.count, g.expected.tensorNames.filter { $0.hasPrefix("grad.") }.count)
  }

  private func compareGradients(_ named: [(name: String, value: Tensor, gradient: Tensor?)], _ g: BertGolden,
                                _ backend: Backend) throws {
    let gt = Self.gradientTolerance
    for p in named {
      let grad = try XCTUnwrap(p.gradient, "\(p.name) has no gradient")
      let e = try g.expected.floats("grad." + p.name), a = try backend.floats(grad)
      if p.name.hasSuffix("attention.self.key.bias") {
        XCTAssertLessThan(Compare.maxAbs(e, [Float](repeating: 0, count: e.count)), Self.zeroGradientMaxAbs, p.name)
        XCTAssertLessThan(Compare.maxAbs(a, [Float](repeating: 0, count: a.count)), Self.zeroGradientMaxAbs, p.name)
      } else if let m = Compare.check(e, a, nmse: gt.nmse, maxAbs: gt.maxAbs) {
        XCTFail("grad \(p.name): \(m)")
      }
    }
  }

  private func check(on backend: Backend) throws {
    let g = try BertGolden.load()
    let model = try g.model(on: backend)
    try model.weights.zeroGradients()
    try model.forward(ids: g.ids, typeIDs: g.types, lengths: g.lengths, batch: g.batch, labels: g.labels,
                      computeGradients: true)
    let tol = Self.logitsTolerance
    if let m = Compare.check(try g.expected.floats("logits"), try model.logits(), nmse: tol.nmse, maxAbs: tol.maxAbs) {
      XCTFail("logits: \(m)")
    }
    let loss = try model.loss(), expectedLoss = try g.expected.floats("loss")[0]
    XCTAssertEqual(loss, expectedLoss, accuracy: Self.lossRelativeTolerance * abs(expectedLoss))
    try model.backward()
    try compareGradients(model.weights.named, g, backend)
    let compared = model.weights.named.count
    XCTAssertEqual(compared, g.expected.tensorNames.filter { $0.hasPrefix("grad.") }.count)
  }
}

/// The BERT golden of tools/make_bert_fixtures.py.
struct BertGolden {
  let config: BertConfig
  let weights: SafetensorsFile
  let expected: SafetensorsFile
  let batch = 3, tokens = 7

  static func load(_ name: String = "tiny") throws -> BertGolden {
    let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/bert")
    return BertGolden(config: try BertConfig.load(from: dir.appendingPathComponent("tiny.config.json")),
                      weights: try SafetensorsFile(contentsOf: dir.appendingPathComponent("\(name).weights.safetensors")),
                      expected: try SafetensorsFile(contentsOf: dir.appendingPathComponent("\(name).expected.safetensors")))
  }

  func ints(_ name: String) throws -> [Int32] { try expected.floats(name).map { Int32($0) } }
  var ids: [Int32] { get throws { try ints("ids") } }
  var types: [Int32] { get throws { try ints("types") } }
  var lengths: [Int32] { get throws { try ints("lengths") } }
  var labels: [Int32] { get throws { try ints("labels") } }

  func model(on backend: Backend) throws -> BertModel {
    BertModel(weights: try BertWeights(source: weights, config: config, numLabels: config.labels.count,
                                       backend: backend, trainable: true, seed: 0))
  }
}

/// Weights held in memory under given names.
final class InMemoryWeights: WeightSource {
  let values: [String: [Float]], shapes: [String: [Int]]
  init(values: [String: [Float]], shapes: [String: [Int]]) { self.values = values; self.shapes = shapes }
  var tensorNames: [String] { values.keys.sorted() }
  func shape(of name: String) throws -> [Int] {
    guard let s = shapes[name] else { throw ModelFileError("<memory>", "no \(name)") }
    return s
  }
  func storedType(of name: String) throws -> String { "F32" }
  func floats(_ name: String) throws -> [Float] {
    guard let v = values[name] else { throw ModelFileError("<memory>", "no \(name)") }
    return v
  }
}
