import Foundation
import XCTest
import VKFCore
import VKFModel

/// BERT's config.json: transformers' defaults for missing keys, labels from id2label, and a
/// refusal naming the key for everything the encoder does not implement.
final class BertConfigTests: XCTestCase {
  private func decode(_ json: String) throws -> BertConfig {
    try BertConfig.decode(Data(json.utf8), file: "config.json")
  }

  private func message(_ json: String) -> String {
    do { _ = try decode(json) } catch { return "\(error)" }
    return "accepted"
  }

  func test_defaultsAndLabels() throws {
    let c = try decode(#"{"model_type": "bert", "id2label": {"1": "pos", "0": "neg"}}"#)
    XCTAssertEqual([c.vocabSize, c.hiddenSize, c.layers, c.heads, c.intermediateSize, c.maxPositions, c.typeVocabSize],
                   [30522, 768, 12, 12, 3072, 512, 2])
    XCTAssertEqual(c.layerNormEps, 1e-12)
    XCTAssertEqual(c.activation, .gelu)
    XCTAssertEqual(c.labels, ["neg", "pos"])
    XCTAssertEqual(c.headDim, 64)
    XCTAssertEqual(try decode(#"{"model_type": "bert", "hidden_act": "gelu_new"}"#).activation, .geluTanh)
    XCTAssertTrue(BertConfig.isBert(URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("Fixtures/bert/tiny.config.json")))
  }

  func test_unsupportedSettings_areRefusedByKey() {
    XCTAssertTrue(message(#"{"model_type": "roberta"}"#).contains("model_type \"roberta\""))
    XCTAssertTrue(message(#"{"model_type": "bert", "hidden_act": "relu"}"#).contains("\"hidden_act\" is invalid"))
    XCTAssertTrue(message(#"{"model_type": "bert", "position_embedding_type": "relative_key"}"#)
      .contains("\"position_embedding_type\" is invalid"))
    XCTAssertTrue(message(#"{"model_type": "bert", "hidden_size": 100, "num_attention_heads": 12}"#)
      .contains("\"num_attention_heads\" is invalid: 12 heads do not divide hidden_size 100"))
    XCTAssertTrue(message(#"{"model_type": "bert", "hidden_size": "big"}"#).contains("\"hidden_size\" should be an integer"))
    XCTAssertTrue(message(#"{"model_type": "bert", "num_hidden_layers": 0}"#).contains("\"num_hidden_layers\" is invalid"))
    XCTAssertTrue(message(#"{"model_type": "bert", "id2label": {"0": "a", "2": "b"}}"#).contains("\"id2label\" is invalid"))
    XCTAssertTrue(message(#"{"model_type": "bert", "is_decoder": true}"#).contains("\"is_decoder\" is invalid"))
    XCTAssertTrue(message(#"{"model_type": "bert", "pad_token_id": 40000}"#).contains("\"pad_token_id\" is invalid"))
    XCTAssertTrue(message("[1]").contains("not a JSON object"))
  }
}
