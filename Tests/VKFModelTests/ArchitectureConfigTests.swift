import Foundation
import VKFCore
import XCTest
@testable import VKFModel

/// What config.json implies for the newer decoders, decided as transformers decides it:
/// which layers attend through a sliding window, Gemma's defaults and activation; malformed
/// or unimplemented settings refused by key (never ignored).
final class ArchitectureConfigTests: XCTestCase {
  private func config(_ type: String, layers: Int = 4, _ extra: String = "") throws -> DecoderConfig {
    let json = #"{"model_type": ""# + type + #"", "hidden_size": 64, "intermediate_size": 128,"#
      + #" "num_hidden_layers": "# + "\(layers)" + #", "num_attention_heads": 4, "vocab_size": 10"#
      + (extra.isEmpty ? "" : ", " + extra) + "}"
    return try DecoderConfig.decode(Data(json.utf8))
  }

  func test_mistral_windowOnEveryLayer_defaulting4096LikeTransformers() throws {
    XCTAssertEqual(try config("mistral", #""sliding_window": 16"#).layerWindows(), [16, 16, 16, 16])
    // MistralConfig's default when the key is absent; an explicit null (v0.2+) is none.
    XCTAssertEqual(try config("mistral").layerWindows(), [4096, 4096, 4096, 4096])
    XCTAssertEqual(try config("mistral", #""sliding_window": null"#).layerWindows(), [0, 0, 0, 0])
  }

  func test_qwen2_windowFromMaxWindowLayers_onlyWithUseSlidingWindow() throws {
    XCTAssertEqual(try config("qwen2", #""sliding_window": 8"#).layerWindows(), [0, 0, 0, 0])
    XCTAssertEqual(try config("qwen2", #""use_sliding_window": true, "sliding_window": 8, "max_window_layers": 1"#)
      .layerWindows(), [0, 8, 8, 8])
    // Qwen2Config's default max_window_layers (28) is past these 4 layers.
    XCTAssertEqual(try config("qwen2", #""use_sliding_window": true, "sliding_window": 8"#).layerWindows(),
                   [0, 0, 0, 0])
  }

  func test_llama_hasNoWindowEvenWithTheKey() throws {
    XCTAssertEqual(try config("llama", #""sliding_window": 8"#).layerWindows(), [0, 0, 0, 0])
  }

  func test_layerTypes_decideWhenPresent_andRoundTrip() throws {
    let c = try config("mistral", layers: 3,
                       #""sliding_window": 5, "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]"#)
    XCTAssertEqual(try c.layerWindows(), [5, 0, 5])
    XCTAssertEqual(try DecoderConfig.decode(JSONEncoder().encode(c)), c)
    // A sliding layer with no window in force attends causally, as in transformers.
    XCTAssertEqual(try config("qwen2", layers: 2, #""layer_types": ["sliding_attention", "full_attention"]"#)
      .layerWindows(), [0, 0])
  }

  func test_shape_carriesTheWindows_orNoneWhenAllFull() throws {
    let windowed = try TransformerShape(config: try config("qwen2", #""use_sliding_window": true, "sliding_window": 8, "max_window_layers": 2"#))
    XCTAssertEqual(windowed.slidingWindows, [0, 0, 8, 8])
    XCTAssertEqual(windowed.featureSummary, ["sliding window 8 on 2 of 4 layers"])
    XCTAssertEqual(windowed.window(layer: 3), 8)
    XCTAssertEqual(try TransformerShape(config: try config("llama")).slidingWindows, [])
  }

  /// Gemma's config defaults (transformers' GemmaConfig) and its activation keys: the legacy
  /// "gelu" means the tanh approximation; an unimplemented activation is refused by key.
  func test_gemma_defaultsAndActivation() throws {
    let c = try config("gemma", #""hidden_act": "gelu""#)
    XCTAssertEqual(c.headDim, 256)
    XCTAssertTrue(c.tieWordEmbeddings)
    XCTAssertNil(c.slidingWindow)
    XCTAssertEqual(c.gatedActivation, .geluTanh)
    XCTAssertEqual(try config("gemma", #""hidden_act": "gelu", "hidden_activation": "gelu_pytorch_tanh""#).gatedActivation,
                   .geluTanh)
    let shape = try TransformerShape(config: c)
    XCTAssertEqual(shape.featureSummary, ["GeGLU", "(1 + w) norms", "embedding × 8.0"])
    XCTAssertEqual(shape.normWeightOffset, 1)
    XCTAssertEqual(shape.embeddingScale, 8)  // √64
    XCTAssertEqual(try TransformerShape(config: try config("llama")).normWeightOffset, 0)
    for (type, extra, key) in [("gemma", #""hidden_activation": "relu""#, "hidden_activation"),
                               ("llama", #""hidden_act": "gelu""#, "hidden_act")] {
      XCTAssertThrowsError(try config(type, extra)) { e in
        guard case .invalidValue(let field, _, _)? = e as? ConfigError else { return XCTFail("got \(e)") }
        XCTAssertEqual(field, key)
      }
    }
  }

  /// Settings that change the math at a non-neutral value are refused by key; their neutral
  /// values (as checkpoints ship them) load.
  func test_unimplementedSettings_areRefusedNamingTheKey_neutralValuesLoad() throws {
    _ = try config("qwen2", #""attention_dropout": 0.0, "partial_rotary_factor": 1.0, "use_bidirectional_attention": false"#)
    _ = try config("gemma", #""attn_logit_softcapping": null"#)
    for (extra, key) in [(#""attention_dropout": 0.1"#, "attention_dropout"),
                         (#""use_bidirectional_attention": true"#, "use_bidirectional_attention"),
                         (#""partial_rotary_factor": 0.5"#, "partial_rotary_factor"),
                         (#""attn_logit_softcapping": 50.0"#, "attn_logit_softcapping"),
                         (#""final_logit_softcapping": 30.0"#, "final_logit_softcapping")] {
      XCTAssertThrowsError(try config("gemma", extra), extra) { e in
        guard case .invalidValue(let field, _, _)? = e as? ConfigError else { return XCTFail("\(extra): got \(e)") }
        XCTAssertEqual(field, key, extra)
      }
    }
  }

  /// gemma2 as transformers' Gemma2Config decides it: caps 50 / 30 when the keys are absent,
  /// none when null; even layers windowed (4096 by default); sandwich norms and
  /// query_pre_attn_scalar 256; a non-positive cap refused by key; the caps round-trip.
  func test_gemma2_defaultsCapsAndAlternatingWindows() throws {
    let c = try config("gemma2")
    XCTAssertEqual(c.attnLogitSoftcapping, 50)
    XCTAssertEqual(c.finalLogitSoftcapping, 30)
    XCTAssertEqual(try c.layerWindows(), [4096, 0, 4096, 0])
    XCTAssertEqual(c.headDim, 256)
    XCTAssertTrue(c.tieWordEmbeddings)
    XCTAssertEqual(c.gatedActivation, .geluTanh)
    let shape = try TransformerShape(config: c)
    XCTAssertTrue(shape.sandwichNorms)
    XCTAssertEqual(shape.attentionScale, 1 / 16)
    XCTAssertEqual(shape.attentionSoftcap, 50)
    XCTAssertEqual(shape.finalLogitSoftcap, 30)
    XCTAssertEqual(shape.normWeightOffset, 1)
    XCTAssertTrue(shape.featureSummary.contains("attention soft-cap 50.0"), "\(shape.featureSummary)")
    XCTAssertEqual(try DecoderConfig.decode(JSONEncoder().encode(c)), c)
    let uncapped = try config("gemma2", #""attn_logit_softcapping": null, "final_logit_softcapping": null"#)
    XCTAssertNil(uncapped.attnLogitSoftcapping)
    XCTAssertNil(uncapped.finalLogitSoftcapping)
    XCTAssertEqual(try DecoderConfig.decode(JSONEncoder().encode(uncapped)), uncapped)
    XCTAssertEqual(try TransformerShape(config: uncapped).attentionSoftcap, 0)
    for key in ["attn_logit_softcapping", "final_logit_softcapping"] {
      XCTAssertThrowsError(try config("gemma2", "\"\(key)\": -1.0")) { e in
        guard case .invalidValue(let field, _, _)? = e as? ConfigError else { return XCTFail("\(key): got \(e)") }
        XCTAssertEqual(field, key)
      }
    }
  }

  /// phi3 as transformers' Phi3Config decides it: RMSNorm ε 1e-5, no window unless given
  /// (then every layer), fused projections in the shape's parameter names; dropout and
  /// partial rotary settings (Phi-4-mini's, in either config form) refused by key.
  func test_phi3_defaultsFusedNamesAndRefusals() throws {
    let c = try config("phi3")
    XCTAssertEqual(c.rmsNormEps, 1e-5)
    XCTAssertEqual(try c.layerWindows(), [0, 0, 0, 0])
    XCTAssertEqual(try config("phi3", #""sliding_window": 5"#).layerWindows(), [5, 5, 5, 5])
    let shape = try TransformerShape(config: c)
    XCTAssertTrue(shape.fusedProjections)
    let names = shape.parameterShapes.map(\.name)
    XCTAssertTrue(names.contains("model.layers.0.self_attn.qkv_proj.weight"))
    XCTAssertTrue(names.contains("model.layers.0.mlp.gate_up_proj.weight"))
    XCTAssertFalse(names.contains("model.layers.0.self_attn.q_proj.weight"))
    XCTAssertEqual(shape.parameterShapes.first { $0.name.hasSuffix("0.self_attn.qkv_proj.weight") }?.shape, [3 * 64, 64])
    for (extra, key) in [(#""resid_pdrop": 0.1"#, "resid_pdrop"), (#""embd_pdrop": 0.1"#, "embd_pdrop"),
                         (#""rope_parameters": {"rope_theta": 10000.0, "partial_rotary_factor": 0.75}"#,
                          "rope_parameters.partial_rotary_factor")] {
      XCTAssertThrowsError(try config("phi3", extra), extra) { e in
        guard case .invalidValue(let field, _, _)? = e as? ConfigError else { return XCTFail("\(extra): got \(e)") }
        XCTAssertEqual(field, key, extra)
      }
    }
  }

  /// gemma3_text in the older config form: rope_theta (global) and rope_local_base_freq, every
  /// 6th layer full (sliding_window_pattern), the attention scale from query_pre_attn_scalar.
  func test_gemma3_olderConfigForm() throws {
    let c = try config("gemma3_text", layers: 7, #""sliding_window": 16, "rope_theta": 1000000.0, "rope_local_base_freq": 10000.0"#)
    XCTAssertEqual(try c.layerWindows(), [16, 16, 16, 16, 16, 0, 16])
    let shape = try TransformerShape(config: c)
    XCTAssertTrue(shape.sandwichNorms && shape.qkNorm)
    XCTAssertEqual(shape.attentionScale, 1 / 16)  // 256^−½
    XCTAssertEqual(shape.localInvFreq, RoPE.inverseFrequencies(headDim: 256, theta: 10000))
    XCTAssertEqual(shape.invFreq, RoPE.inverseFrequencies(headDim: 256, theta: 1_000_000))
    XCTAssertEqual(try DecoderConfig.decode(JSONEncoder().encode(c)), c)
  }

  func test_malformedWindowSettings_areRefusedNamingTheKey() {
    let cases: [(String, String, String)] = [
      ("mistral", #""sliding_window": 0"#, "sliding_window"),
      ("mistral", #""sliding_window": -4"#, "sliding_window"),
      ("mistral", #""layer_types": ["full_attention"]"#, "layer_types"),
      ("mistral", #""layer_types": ["chunked_attention", "full_attention", "full_attention", "full_attention"]"#,
       "layer_types"),
    ]
    for (type, extra, key) in cases {
      XCTAssertThrowsError(try config(type, extra), extra) { e in
        guard case .invalidValue(let field, _, _)? = e as? ConfigError else { return XCTFail("\(extra): got \(e)") }
        XCTAssertEqual(field, key, extra)
      }
    }
  }
}
