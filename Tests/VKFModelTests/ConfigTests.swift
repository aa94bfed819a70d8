import Foundation
import VKFCore
import XCTest
@testable import VKFModel

/// URL of `Fixtures/configs/<name>.json` in the test bundle.
private func configFixture(_ name: String) -> URL {
  Bundle.module.resourceURL!.appendingPathComponent("Fixtures/configs/\(name).json")
}

private func loadConfig(_ name: String) throws -> DecoderConfig {
  try DecoderConfig.load(from: configFixture(name))
}

final class ConfigDecodingTests: XCTestCase {
  func test_smollm2_decodesEveryField() throws {
    let c = try loadConfig("smollm2-135m-instruct")
    XCTAssertEqual(c.modelType, "llama")
    XCTAssertEqual(c.hiddenSize, 576)
    XCTAssertEqual(c.intermediateSize, 1536)
    XCTAssertEqual(c.numHiddenLayers, 30)
    XCTAssertEqual(c.numAttentionHeads, 9)
    XCTAssertEqual(c.numKeyValueHeads, 3)
    XCTAssertEqual(c.headDim, 64)
    XCTAssertEqual(c.groupSize, 3)
    XCTAssertEqual(c.rmsNormEps, 9.999999747378752e-06)
    XCTAssertEqual(c.vocabSize, 49152)
    XCTAssertEqual(c.maxPositionEmbeddings, 8192)
    XCTAssertTrue(c.tieWordEmbeddings)
    XCTAssertEqual(c.ropeTheta, 100000)
    XCTAssertNil(c.ropeScaling)
    XCTAssertFalse(c.hasQKVBias)
    XCTAssertFalse(c.mlpBias)
    XCTAssertEqual(c.bosTokenId, 1)
    XCTAssertEqual(c.eosTokenIds, [2])
    XCTAssertEqual(c.padTokenId, 2)
    XCTAssertEqual(c.torchDtype, "bfloat16")
    XCTAssertNil(c.effectiveSlidingWindow)
  }

  func test_llama32_decodesLlama3RopeScalingAndEosList() throws {
    let c = try loadConfig("llama-3.2-1b-instruct")
    XCTAssertEqual(c.eosTokenIds, [128001, 128008, 128009])
    XCTAssertEqual(c.ropeTheta, 500000)
    XCTAssertEqual(c.ropeScaling?.kind, .llama3)
    XCTAssertEqual(c.ropeScaling?.llama3, RoPE.Llama3Scaling(
      factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192))
    XCTAssertTrue(c.tieWordEmbeddings)
    XCTAssertEqual(c.headDim, 64)
  }

  func test_llama31_headDimDefaultsToHiddenOverHeads() throws {
    let c = try loadConfig("llama-3.1-8b-instruct")
    XCTAssertEqual(c.headDim, 128)
    XCTAssertEqual(c.numKeyValueHeads, 8)
    XCTAssertFalse(c.tieWordEmbeddings)
    XCTAssertEqual(c.ropeScaling?.factor, 8)
  }

  func test_mistral_recordsSlidingWindowAndDefaultsBiasesOff() throws {
    let c = try loadConfig("mistral-7b-v0.1")
    XCTAssertEqual(c.modelType, "mistral")
    XCTAssertEqual(c.slidingWindow, 4096)
    XCTAssertEqual(c.effectiveSlidingWindow, 4096)
    XCTAssertFalse(c.attentionBias)
    XCTAssertFalse(c.hasQKVBias)
    XCTAssertFalse(c.mlpBias)
    XCTAssertEqual(c.headDim, 128)
  }

  func test_qwen25_alwaysHasQKVBiasAndTiesEmbeddings() throws {
    let c = try loadConfig("qwen2.5-0.5b-instruct")
    XCTAssertEqual(c.modelType, "qwen2")
    XCTAssertTrue(c.hasQKVBias)
    XCTAssertFalse(c.hasOutputProjectionBias)
    XCTAssertTrue(c.tieWordEmbeddings)
    XCTAssertEqual(c.headDim, 64)
    XCTAssertEqual(c.rmsNormEps, 1e-6)
    XCTAssertEqual(c.ropeTheta, 1_000_000)
    XCTAssertEqual(c.slidingWindow, 32768)
    XCTAssertNil(c.effectiveSlidingWindow, "use_sliding_window is false")
  }

  func test_tinyllama_nullRopeScalingIsNil() throws {
    let c = try loadConfig("tinyllama-1.1b-chat-v1.0")
    XCTAssertNil(c.ropeScaling)
    XCTAssertEqual(c.numKeyValueHeads, 4)
    XCTAssertEqual(c.maxPositionEmbeddings, 2048)
  }

  func test_ropeParameters_carriesThetaAndScaling() throws {
    let c = try loadConfig("rope-parameters-llama3")
    XCTAssertEqual(c.ropeTheta, 500000)
    XCTAssertEqual(c.ropeScaling?.kind, .llama3)
    XCTAssertEqual(c.torchDtype, "bfloat16", "the newer `dtype` key is read too")
    let d = try loadConfig("rope-parameters-default")
    XCTAssertEqual(d.ropeTheta, 100000)
    XCTAssertNil(d.ropeScaling, "rope_type default means no scaling")
    XCTAssertEqual(d.headDim, 64)
  }

  func test_defaults_applyWhenKeysAreAbsent() throws {
    let json = #"{"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128,"#
      + #" "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 10}"#
    let c = try DecoderConfig.decode(Data(json.utf8))
    XCTAssertEqual(c.numKeyValueHeads, 4)
    XCTAssertEqual(c.headDim, 16)
    XCTAssertEqual(c.rmsNormEps, 1e-6)
    XCTAssertEqual(c.ropeTheta, 10000)
    XCTAssertEqual(c.maxPositionEmbeddings, 32768)
    XCTAssertFalse(c.tieWordEmbeddings)
    XCTAssertEqual(c.eosTokenIds, [])
  }

  func test_encodeThenDecode_roundTrips() throws {
    for name in ["smollm2-135m-instruct", "llama-3.2-1b-instruct", "mistral-7b-v0.1",
                 "qwen2.5-0.5b-instruct", "rope-parameters-llama3", "linear-rope"] {
      let c = try loadConfig(name)
      let again = try DecoderConfig.decode(JSONEncoder().encode(c))
      XCTAssertEqual(c, again, name)
    }
  }
}

final class ConfigErrorTests: XCTestCase {
  private func error(_ name: String) -> ConfigError? {
    do { _ = try loadConfig(name); return nil } catch { return error as? ConfigError }
  }

  func test_unknownModelType_listsSupportedTypes() {
    guard case let .unsupportedModelType(type, file, supported)? = error("broken-unknown-model-type") else {
      return XCTFail("expected unsupportedModelType")
    }
    XCTAssertEqual(type, "gpt2")
    XCTAssertTrue(file.hasSuffix("broken-unknown-model-type.json"))
    XCTAssertEqual(supported, ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "mixtral", "qwen2_moe",
                               "qwen3_moe"])
    XCTAssertTrue("\(ConfigError.unsupportedModelType(type, file: file, supported: supported))"
      .contains("llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3_text, phi3, mixtral, qwen2_moe, qwen3_moe"))
  }

  func test_missingHiddenSize_namesFieldAndFile() {
    let e = error("broken-missing-hidden-size")
    guard case let .missingField(field, file)? = e else { return XCTFail("got \(String(describing: e))") }
    XCTAssertEqual(field, "hidden_size")
    XCTAssertTrue(file.hasSuffix("broken-missing-hidden-size.json"))
  }

  func test_stringWhereNumberExpected_namesField() {
    let e = error("broken-string-number")
    guard case let .wrongType(field, expected, _)? = e else { return XCTFail("got \(String(describing: e))") }
    XCTAssertEqual(field, "hidden_size")
    XCTAssertEqual(expected, "a number")
  }

  func test_yarnRopeScaling_isUnsupported() {
    guard case let .unsupportedRopeScaling(name, _, supported)? = error("broken-yarn-rope") else {
      return XCTFail("expected unsupportedRopeScaling")
    }
    XCTAssertEqual(name, "yarn")
    XCTAssertEqual(supported, ["llama3", "linear", "dynamic"])
  }

  func test_headsNotDivisible_isInvalidValue() {
    let json = #"{"model_type": "llama", "hidden_size": 64, "intermediate_size": 128,"#
      + #" "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 3, "vocab_size": 10}"#
    XCTAssertThrowsError(try DecoderConfig.decode(Data(json.utf8))) { e in
      guard case .invalidValue("num_key_value_heads", _, _)? = e as? ConfigError else {
        return XCTFail("got \(e)")
      }
    }
  }

  /// Dimensions beyond any real model are refused before anything is sized from them (the
  /// fuzzer's head_dim of 6·10¹⁴ sized the RoPE table at 10¹⁵ bytes: a fatal allocation).
  func test_absurdDimensions_areInvalidValues() {
    for (key, value) in [("head_dim", "610995116277764"), ("hidden_size", "1000000000"), ("vocab_size", "99999999999"),
                         ("num_hidden_layers", "100000"), ("intermediate_size", "4611686018427387904")] {
      var fields = ["\"model_type\": \"llama\"", "\"hidden_size\": 64", "\"intermediate_size\": 128",
                    "\"num_hidden_layers\": 2", "\"num_attention_heads\": 4", "\"vocab_size\": 10"]
      fields.removeAll { $0.hasPrefix("\"\(key)\"") }
      fields.append("\"\(key)\": \(value)")
      XCTAssertThrowsError(try DecoderConfig.decode(Data(("{" + fields.joined(separator: ", ") + "}").utf8)), key) { e in
        guard case .invalidValue(key, _, _)? = e as? ConfigError else { return XCTFail("\(key): got \(e)") }
        XCTAssertTrue("\(e)".contains("beyond any model"), "\(e)")
      }
    }
  }

  func test_missingFile_isUnreadable() {
    XCTAssertThrowsError(try DecoderConfig.load(from: URL(fileURLWithPath: "/nonexistent/config.json"))) { e in
      guard case .unreadable? = e as? ConfigError else { return XCTFail("got \(e)") }
    }
  }
}

final class ConfigRoPETests: XCTestCase {
  /// Frequencies are computed in f32 exactly as VKFCore does; any difference is a bug.
  private let exact: Float = 0

  func test_defaultRope_matchesCoreFrequencies() throws {
    let c = try loadConfig("smollm2-135m-instruct")
    let inv = c.ropeInverseFrequencies()
    XCTAssertEqual(inv.count, 32)
    XCTAssertEqual(inv, RoPE.inverseFrequencies(headDim: 64, theta: 100000))
    XCTAssertEqual(inv[0], 1, accuracy: exact)
  }

  func test_llama3Rope_passesScalingToCore() throws {
    let c = try loadConfig("llama-3.2-1b-instruct")
    let scaled = c.ropeInverseFrequencies()
    let plain = RoPE.inverseFrequencies(headDim: 64, theta: 500000)
    XCTAssertEqual(scaled, RoPE.inverseFrequencies(headDim: 64, theta: 500000, llama3: c.ropeScaling?.llama3))
    XCTAssertEqual(scaled[0], plain[0], "high frequencies are kept")
    XCTAssertEqual(scaled[31], plain[31] / 32, accuracy: plain[31] * 1e-6, "low frequencies divided by factor")
  }

  func test_linearRope_dividesByFactor() throws {
    let c = try loadConfig("linear-rope")
    let plain = RoPE.inverseFrequencies(headDim: 16, theta: 10000)
    XCTAssertEqual(c.ropeInverseFrequencies(), plain.map { $0 / 2 })
  }

  func test_dynamicRope_changesOnlyPastTrainedContext() throws {
    let c = try loadConfig("dynamic-rope")
    let plain = RoPE.inverseFrequencies(headDim: 16, theta: 10000)
    XCTAssertEqual(c.ropeInverseFrequencies(sequenceLength: 128), plain)
    let longer = c.ropeInverseFrequencies(sequenceLength: 256)
    // transformers: base = theta * (factor*len/max - (factor-1)) ** (dim/(dim-2)) = 10000 * 3^(16/14)
    XCTAssertEqual(longer, RoPE.inverseFrequencies(headDim: 16, theta: 10000 * pow(3, 16.0 / 14)))
  }
}
