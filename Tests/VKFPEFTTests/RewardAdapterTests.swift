import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport
@testable import VKFPEFT

/// Reward-model adapters (peft's SEQ_CLS form: LoRA + the `score` head in modules_to_save) and
/// reward model directories (LlamaForSequenceClassification).
final class RewardAdapterTests: XCTestCase {
  /// The fixture's scores come from transformers in f32 (PyTorch's matmul vs OpenBLAS; 2 tiny
  /// layers): rounding differences are ~1e-6 on scores of ~2.
  static let transformersTolerance: Float = 1e-4

  var dir: PEFTTestDirectory!
  override func setUpWithError() throws { dir = try PEFTTestDirectory() }

  /// Scores of right-padded rows (B, T): the head at each row's last non-`pad` token of the
  /// final normed hidden states.
  static func scores(_ weights: DecoderWeights, head: [Float], ids: [Int32], rows: Int, pad: Int32) throws -> [Float] {
    let model = try DecoderModel(weights: weights)
    let h = try weights.backend.floats(try model.forwardHidden(ids: ids, batch: rows))
    let t = ids.count / rows, c = weights.shape.hidden
    return try (0..<rows).map { r in
      let last = try XCTUnwrap((0..<t).last { ids[r * t + $0] != pad })
      return (0..<c).reduce(Float(0)) { $0 + h[(r * t + last) * c + $1] * head[$1] }
    }
  }

  /// peft's own SEQ_CLS adapter (tools/make_reward_fixtures.py) loads with its head, and our
  /// scores equal transformers' PeftModel over LlamaForSequenceClassification.
  func test_loadAdapter_peftWrittenRewardAdapter_scoresAsTransformers() throws {
    let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/reward")
    let info = try PEFTAdapterFiles.readAdapterConfig(fixture.appendingPathComponent("adapter"))
    XCTAssertTrue(info.sequenceClassification)
    let expected = try SafetensorsFile(contentsOf: fixture.appendingPathComponent("expected.safetensors"))
    let ids = try expected.floats("ids").map { Int32($0) }, rows = try expected.shape(of: "ids")[0]
    let pad = Int32(try expected.floats("pad")[0])
    let weights = try PEFTFixture.base(on: TestBackends.cpu)
    let a = try PEFTAdapterFiles.loadAdapter(fixture.appendingPathComponent("adapter"), into: weights)
    a.lora.training = false
    let head = try XCTUnwrap(a.scoreHead)
    XCTAssertEqual(head.count, weights.shape.hidden)
    let got = try Self.scores(weights, head: head, ids: ids, rows: rows, pad: pad)
    let want = try expected.floats("scores")
    XCTAssertEqual(got.count, want.count)
    for (g, w) in zip(got, want) { XCTAssertEqual(g, w, accuracy: Self.transformersTolerance) }
    // Without the adapter the scores differ: the LoRA part was applied, not only the head.
    a.lora.detach()
    let bare = try Self.scores(weights, head: head, ids: ids, rows: rows, pad: pad)
    XCTAssertGreaterThan(zip(bare, want).map { abs($0 - $1) }.max() ?? 0, 100 * Self.transformersTolerance)
  }

  func test_saveWithScoreHead_roundTripsAndPlainLoadRefuses() throws {
    let be = TestBackends.cpu
    let weights = try PEFTFixture.base(on: be)
    let lora = try LoRAModel(weights: weights, config: LoRAConfig(r: 4, alpha: 8, targetModules: ["q_proj", "v_proj"]),
                             seed: 3)
    try PEFTTestSupport.randomize(lora, seed: 5)
    let headValues = TestData.uniform(weights.shape.hidden, seed: 7)
    let head = try be.tensor(headValues, shape: [1, weights.shape.hidden])
    let out = dir.path("reward")
    try PEFTAdapterFiles.save(lora, baseModel: "base", to: out, scoreHead: head)
    let config = try XCTUnwrap(JSONSerialization.jsonObject(
      with: Data(contentsOf: out.appendingPathComponent("adapter_config.json"))) as? [String: Any])
    XCTAssertEqual(config["task_type"] as? String, "SEQ_CLS")
    XCTAssertEqual(config["modules_to_save"] as? [String], ["classifier", "score"])
    let st = try SafetensorsFile(contentsOf: out.appendingPathComponent("adapter_model.safetensors"))
    XCTAssertEqual(try st.shape(of: "base_model.model.score.weight"), [1, weights.shape.hidden])
    let card = try String(contentsOf: out.appendingPathComponent("README.md"), encoding: .utf8)
    XCTAssertTrue(card.contains("AutoModelForSequenceClassification"), card)

    let saved = try Dictionary(uniqueKeysWithValues: lora.trainableTensors.map { ($0.name, try be.floats($0.value)) })
    lora.detach()
    let fresh = try PEFTFixture.base(on: be)
    XCTAssertThrowsError(try PEFTAdapterFiles.load(out, into: fresh)) { error in
      XCTAssertTrue("\(error)".contains("SEQ_CLS") && "\(error)".contains("score"), "\(error)")
      XCTAssertFalse("\(error)".contains("\n"))
    }
    var attached = 0
    fresh.updateProjections { _, l in if l.adapter != nil { attached += 1 } }
    XCTAssertEqual(attached, 0, "a refused load attaches nothing")
    let a = try PEFTAdapterFiles.loadAdapter(out, into: fresh)
    XCTAssertEqual(a.scoreHead, headValues)
    for t in a.lora.trainableTensors { XCTAssertEqual(try be.floats(t.value), saved[t.name], t.name) }
  }

  func test_readAdapterConfig_modulesToSave_onlyTheSeqClsHead() throws {
    let base = #""peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]"#
    let accepted = [#"{\#(base), "task_type": "SEQ_CLS", "modules_to_save": ["classifier", "score"]}"#,
                    #"{\#(base), "task_type": "SEQ_CLS", "modules_to_save": ["score"]}"#,
                    #"{\#(base), "task_type": "SEQ_CLS", "modules_to_save": null}"#,
                    #"{\#(base), "task_type": "CAUSAL_LM", "modules_to_save": []}"#]
    for (i, text) in accepted.enumerated() {
      let d = dir.path("ok\(i)")
      try FileManager.default.createDirectory(at: d, withIntermediateDirectories: false)
      try Data(text.utf8).write(to: d.appendingPathComponent("adapter_config.json"))
      XCTAssertNoThrow(try PEFTAdapterFiles.readConfig(d), text)
      XCTAssertEqual(try PEFTAdapterFiles.readAdapterConfig(d).sequenceClassification, text.contains("SEQ_CLS"))
    }
    let refused: [(String, String)] = [
      (#"{\#(base), "task_type": "SEQ_CLS", "modules_to_save": ["score", "lm_head"]}"#, "modules_to_save"),
      (#"{\#(base), "task_type": "CAUSAL_LM", "modules_to_save": ["score"]}"#, "modules_to_save"),
      (#"{\#(base), "modules_to_save": ["score"]}"#, "modules_to_save"),
      (#"{\#(base), "task_type": "SEQ_CLS", "modules_to_save": "score"}"#, "modules_to_save"),
      (#"{\#(base), "task_type": "TOKEN_CLS"}"#, "TOKEN_CLS"),
    ]
    for (i, (text, expected)) in refused.enumerated() {
      let d = dir.path("bad\(i)")
      try FileManager.default.createDirectory(at: d, withIntermediateDirectories: false)
      try Data(text.utf8).write(to: d.appendingPathComponent("adapter_config.json"))
      XCTAssertThrowsError(try PEFTAdapterFiles.readConfig(d), text) { error in
        XCTAssertTrue("\(error)".contains(expected), "\(text) → \(error)")
        XCTAssertFalse("\(error)".contains("\n"))
      }
    }
  }

  /// A SEQ_CLS adapter without its head, or with a head of the wrong width, is refused by name.
  func test_loadAdapter_missingOrMisshapenHead_refused() throws {
    let be = TestBackends.cpu
    let weights = try PEFTFixture.base(on: be)
    let lora = try LoRAModel(weights: weights, config: LoRAConfig(r: 2, alpha: 4, targetModules: ["q_proj"]), seed: 1)
    let good = dir.path("good")
    try PEFTAdapterFiles.save(lora, baseModel: "b", to: good,
                              scoreHead: try be.tensor([Float](repeating: 0.5, count: weights.shape.hidden),
                                                       shape: [1, weights.shape.hidden]))
    lora.detach()
    let st = try SafetensorsFile(contentsOf: good.appendingPathComponent("adapter_model.safetensors"))
    let loraTensors = try st.tensorNames.filter { $0 != PEFTAdapterFiles.scoreHeadKey }.map {
      try SafetensorsWriter.Tensor(name: $0, shape: try st.shape(of: $0), floats: try st.floats($0))
    }
    let cases: [(String, [SafetensorsWriter.Tensor], String)] = [
      ("nohead", loraTensors, "score.weight is missing"),
      ("wide", loraTensors + [try SafetensorsWriter.Tensor(name: PEFTAdapterFiles.scoreHeadKey, shape: [2, weights.shape.hidden],
                                                           floats: [Float](repeating: 0, count: 2 * weights.shape.hidden))],
       "score.weight has shape [2, \(weights.shape.hidden)]"),
    ]
    for (name, tensors, expected) in cases {
      let d = dir.path(name)
      try FileManager.default.createDirectory(at: d, withIntermediateDirectories: false)
      try FileManager.default.copyItem(at: good.appendingPathComponent("adapter_config.json"),
                                       to: d.appendingPathComponent("adapter_config.json"))
      try SafetensorsWriter.write(tensors: tensors, to: d.appendingPathComponent("adapter_model.safetensors"))
      let fresh = try PEFTFixture.base(on: be)
      XCTAssertThrowsError(try PEFTAdapterFiles.loadAdapter(d, into: fresh), name) { error in
        XCTAssertTrue("\(error)".contains(expected), "\(name) → \(error)")
      }
    }
  }

  /// A reward model directory: the sequence-classification class, one label, pad_token_id,
  /// score.weight and no LM head (the fixture base is untied, so lm_head.weight is dropped).
  func test_hfModelWriter_scoreHead_writesSequenceClassificationDirectory() throws {
    let be = TestBackends.cpu
    let weights = try PEFTFixture.base(on: be)
    let config = try DecoderConfig.load(from: PEFTFixture.baseDirectory)
    let head = try be.tensor(TestData.uniform(weights.shape.hidden, seed: 11), shape: [1, weights.shape.hidden])
    let out = dir.path("rm")
    let written = try HFModelWriter.write(weights: weights, config: config, tokenizerSource: nil, to: out,
                                          scoreHead: .init(weight: head, padTokenID: 0))
    XCTAssertEqual(written.config.padTokenId, 0)
    let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("config.json")))
                               as? [String: Any])
    XCTAssertEqual(json["architectures"] as? [String], ["LlamaForSequenceClassification"])
    XCTAssertEqual(json["id2label"] as? [String: String], ["0": "LABEL_0"])
    XCTAssertEqual(json["label2id"] as? [String: Int], ["LABEL_0": 0])
    XCTAssertEqual(json["pad_token_id"] as? Int, 0)
    let st = try SafetensorsFile(contentsOf: out.appendingPathComponent("model.safetensors"))
    XCTAssertEqual(try st.floats("score.weight"), try be.floats(head))
    XCTAssertFalse(st.tensorNames.contains("lm_head.weight"))
    XCTAssertTrue(st.tensorNames.contains("model.embed_tokens.weight"))
    XCTAssertThrowsError(try HFModelWriter.write(weights: weights, config: config, tokenizerSource: nil,
                                                 to: dir.path("bad"), scoreHead: .init(weight: try be.tensor([Float](repeating: 1, count: 2), shape: [1, 2]),
                                                                                        padTokenID: 0))) {
      XCTAssertTrue("\($0)".contains("score head"), "\($0)")
    }
  }
}
