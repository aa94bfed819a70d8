import Foundation
import VKFCore
import XCTest
@testable import VKFModel

/// What config.json implies for the mixture-of-experts decoders, with transformers' defaults
/// (MixtralConfig, Qwen3MoeConfig), and the settings that are not implemented refused by key.
final class MoEConfigTests: XCTestCase {
  private func config(_ type: String, _ extra: String = "") throws -> DecoderConfig {
    let json = #"{"model_type": ""# + type + #"", "hidden_size": 64, "intermediate_size": 128,"#
      + #" "num_hidden_layers": 4, "num_attention_heads": 4, "vocab_size": 10"#
      + (extra.isEmpty ? "" : ", " + extra) + "}"
    return try DecoderConfig.decode(Data(json.utf8))
  }

  private func refusal(_ type: String, _ extra: String) -> String {
    do { _ = try config(type, extra); return "" } catch { return "\(error)" }
  }

  func test_mixtral_defaults() throws {
    let c = try config("mixtral")
    let m = try XCTUnwrap(c.moe)
    XCTAssertEqual(m.experts, 8)
    XCTAssertEqual(m.expertsPerToken, 2)
    XCTAssertEqual(m.expertIntermediateSize, 128, "Mixtral's experts are intermediate_size wide")
    XCTAssertTrue(m.normTopKProb)
    XCTAssertEqual(m.routerAuxLossCoef, 0.001)
    XCTAssertEqual(m.trainingAuxLossCoef, 0, "output_router_logits defaults to false: no load-balancing loss")
    XCTAssertEqual(c.ropeTheta, 1_000_000)
    XCTAssertEqual(c.rmsNormEps, 1e-5)
    XCTAssertEqual(try c.layerWindows(), [0, 0, 0, 0], "MixtralConfig's sliding_window defaults to None")
    XCTAssertEqual(try config("mixtral", #""sliding_window": 16"#).layerWindows(), [16, 16, 16, 16])
    let shape = try TransformerShape(config: try config("mixtral", #""output_router_logits": true, "router_aux_loss_coef": 0.02"#))
    XCTAssertEqual(shape.moe?.auxLossCoefficient, 0.02)
    XCTAssertEqual(shape.moe?.sparseLayers, [true, true, true, true])
  }

  func test_qwen3MoE_readsNumExperts_andItsSparseLayerRule() throws {
    let c = try config("qwen3_moe", #""num_experts": 16, "num_experts_per_tok": 4, "moe_intermediate_size": 32, "#
      + #""norm_topk_prob": true, "decoder_sparse_step": 2, "mlp_only_layers": [3]"#)
    let m = try XCTUnwrap(c.moe)
    XCTAssertEqual([m.experts, m.expertsPerToken, m.expertIntermediateSize], [16, 4, 32])
    XCTAssertTrue(m.normTopKProb)
    // Sparse where (i + 1) % step == 0 and i is not MLP-only: layer 1 only (3 is MLP-only).
    XCTAssertEqual((0..<4).map(m.isSparse), [false, true, false, false])
    XCTAssertTrue(c.hasQKNorm)
    let d = try XCTUnwrap(try config("qwen3_moe").moe)
    XCTAssertEqual([d.experts, d.expertsPerToken, d.expertIntermediateSize], [128, 8, 768])
    XCTAssertFalse(d.normTopKProb)
  }

  /// Qwen2-MoE: Qwen2MoeConfig's defaults (60 experts, top-4, width 1408, a shared expert of
  /// 5632), q/k/v biases unless qkv_bias is false, and its window rule (even layers below
  /// max_window_layers); transformers 5 writes sliding_window 0 when the window is off.
  func test_qwen2MoE_defaults_sharedExpert_biases_andWindows() throws {
    let c = try config("qwen2_moe")
    let m = try XCTUnwrap(c.moe)
    XCTAssertEqual([m.experts, m.expertsPerToken, m.expertIntermediateSize, m.sharedExpertIntermediateSize],
                   [60, 4, 1408, 5632])
    XCTAssertFalse(m.normTopKProb)
    XCTAssertTrue(c.hasQKVBias)
    XCTAssertFalse(c.hasOutputProjectionBias)
    XCTAssertFalse(try config("qwen2_moe", #""qkv_bias": false"#).hasQKVBias)
    XCTAssertEqual(try TransformerShape(config: c).moe?.sharedIntermediate, 5632)
    XCTAssertEqual(try config("qwen2_moe", #""sliding_window": 0, "use_sliding_window": false"#).layerWindows(),
                   [0, 0, 0, 0])
    XCTAssertEqual(try config("qwen2_moe", #""sliding_window": 8, "use_sliding_window": true, "max_window_layers": 3"#)
      .layerWindows(), [8, 0, 8, 0])
    XCTAssertTrue(refusal("qwen2_moe", #""shared_expert_intermediate_size": 0"#).contains("shared_expert_intermediate_size"))
    XCTAssertTrue(refusal("qwen2_moe", #""sliding_window": 0, "use_sliding_window": true"#).contains("sliding_window"))
  }

  /// The written config keeps the keys each architecture's checkpoints use.
  func test_encode_roundTripsTheRoutingKeys() throws {
    for (type, extra) in [("mixtral", #""num_local_experts": 4, "output_router_logits": true"#),
                          ("qwen3_moe", #""num_experts": 6, "num_experts_per_tok": 2, "moe_intermediate_size": 32, "mlp_only_layers": [0]"#),
                          ("qwen2_moe", #""num_experts": 6, "shared_expert_intermediate_size": 40, "qkv_bias": true"#)] {
      let c = try config(type, extra)
      let again = try DecoderConfig.decode(try JSONEncoder().encode(c))
      XCTAssertEqual(again.moe, c.moe, type)
    }
  }

  func test_unimplementedSettings_refusedByKey() {
    XCTAssertTrue(refusal("mixtral", #""router_jitter_noise": 0.01"#).contains("router_jitter_noise"))
    XCTAssertTrue(refusal("qwen3_moe", #""shared_expert_intermediate_size": 64"#).contains("shared_expert_intermediate_size"))
    XCTAssertTrue(refusal("mixtral", #""num_local_experts": 2, "num_experts_per_tok": 3"#).contains("num_experts_per_tok"))
    XCTAssertTrue(refusal("qwen3_moe", #""mlp_only_layers": [4]"#).contains("mlp_only_layers"))
    XCTAssertTrue(refusal("qwen3_moe", #""decoder_sparse_step": 0"#).contains("decoder_sparse_step"))
    XCTAssertTrue(refusal("mixtral", #""router_aux_loss_coef": -1"#).contains("router_aux_loss_coef"))
  }
}
