import Foundation
import XCTest

/// `train` on a tiny random Mixtral (hidden 64, 2 layers, 4 experts, top-2, the load-balancing
/// loss on; SmolLM2's tokenizer): LoRA on the attention by default, full fine-tuning writing
/// every expert under its checkpoint name, and the modes experts do not support refused.
final class MoETrainTests: XCTestCase {
  /// The model's directory: config.json, random weights by Mixtral's checkpoint names, and the
  /// shared SmolLM2 tokenizer files.
  /// `qwen2MoE`: a Qwen2-MoE instead (q/k/v biases, a shared expert of width 48 per layer).
  static func tinyMixtral(in dir: URL, qwen2MoE: Bool = false) throws -> URL {
    let model = dir.appendingPathComponent(qwen2MoE ? "tiny-qwen2-moe" : "tiny-mixtral")
    try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
    let shared = URL(fileURLWithPath: try TrainedRun.modelDirectory())
    for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"] {
      let src = shared.appendingPathComponent(f)
      if FileManager.default.fileExists(atPath: src.path) {
        try FileManager.default.copyItem(at: src, to: model.appendingPathComponent(f))
      }
    }
    let (v, h, f, layers, experts, kv, hd) = (49152, 64, 96, 2, 4, 32, 16)
    var config: [String: Any] = [
      "model_type": "mixtral", "architectures": ["MixtralForCausalLM"], "vocab_size": v, "hidden_size": h,
      "intermediate_size": f, "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2,
      "head_dim": hd, "num_local_experts": experts, "num_experts_per_tok": 2, "output_router_logits": true,
      "router_aux_loss_coef": 0.01, "tie_word_embeddings": true, "max_position_embeddings": 512,
      "bos_token_id": 1, "eos_token_id": 2,
    ]
    let sharedWidth = 48, block = qwen2MoE ? "mlp" : "block_sparse_moe"
    let (gName, uName, dName) = qwen2MoE ? ("gate_proj", "up_proj", "down_proj") : ("w1", "w3", "w2")
    if qwen2MoE {
      config["model_type"] = "qwen2_moe"; config["architectures"] = ["Qwen2MoeForCausalLM"]
      config["num_local_experts"] = nil; config["num_experts"] = experts
      config["moe_intermediate_size"] = f; config["shared_expert_intermediate_size"] = sharedWidth
    }
    try JSONSerialization.data(withJSONObject: config).write(to: model.appendingPathComponent("config.json"))
    var shapes: [(String, [Int])] = [("model.embed_tokens.weight", [v, h]), ("model.norm.weight", [h])]
    for l in 0..<layers {
      let p = "model.layers.\(l)."
      shapes += [(p + "input_layernorm.weight", [h]), (p + "post_attention_layernorm.weight", [h]),
                 (p + "self_attn.q_proj.weight", [4 * hd, h]), (p + "self_attn.k_proj.weight", [kv, h]),
                 (p + "self_attn.v_proj.weight", [kv, h]), (p + "self_attn.o_proj.weight", [h, 4 * hd]),
                 (p + "\(block).gate.weight", [experts, h])]
      for e in 0..<experts {
        let x = p + "\(block).experts.\(e)."
        shapes += [(x + "\(gName).weight", [f, h]), (x + "\(uName).weight", [f, h]), (x + "\(dName).weight", [h, f])]
      }
      if qwen2MoE {
        shapes += [(p + "self_attn.q_proj.bias", [4 * hd]), (p + "self_attn.k_proj.bias", [kv]),
                   (p + "self_attn.v_proj.bias", [kv]), (p + "mlp.shared_expert.gate_proj.weight", [sharedWidth, h]),
                   (p + "mlp.shared_expert.up_proj.weight", [sharedWidth, h]),
                   (p + "mlp.shared_expert.down_proj.weight", [h, sharedWidth]),
                   (p + "mlp.shared_expert_gate.weight", [1, h])]
      }
    }
    var seed: UInt64 = 11
    try ClassificationTests.writeSafetensors(shapes.map { name, shape in
      let values = (0..<shape.reduce(1, *)).map { _ -> Float in
        seed = seed &* 6364136223846793005 &+ 1442695040888963407
        let u = Float(seed >> 40) / Float(1 << 24) - 0.5
        return name.hasSuffix("norm.weight") ? 1 : name.contains(".gate.weight") ? u : u * 0.1
      }
      return (name, shape, values)
    }, to: model.appendingPathComponent("model.safetensors"))
    return model
  }

  private func setUp(_ tag: String) throws -> (dir: URL, model: URL, data: URL) {
    let dir = try SharedTemporaryDirectories.make(
      FileManager.default.temporaryDirectory.appendingPathComponent("vkf-moe-\(tag)-\(UUID())"))
    let data = dir.appendingPathComponent("train.json")
    try TrainedRun.alpaca("alpaca_train.json", count: 8, to: data)
    return (dir, try Self.tinyMixtral(in: dir), data)
  }

  private func common(_ s: (dir: URL, model: URL, data: URL)) -> [String] {
    ["train", "--cpu", "--model", s.model.path, "--data", s.data.path, "--max-seq-length", "64", "--batch-size", "2",
     "--max-steps", "2", "--learning-rate", "1e-3"]
  }

  func test_lora_adaptsTheAttention_andFullWritesEveryExpert() throws {
    let s = try setUp("train")
    let adapter = s.dir.appendingPathComponent("adapter")
    let lora = try CLITests.run(common(s) + ["--method", "lora", "--output", adapter.path])
    XCTAssertEqual(lora.status, 0, lora.stderr)
    XCTAssertTrue(lora.stdout.contains("4 experts, top-2 on 2 of 2 layers, load-balancing loss × 0.01"), lora.stdout)
    XCTAssertTrue(lora.stdout.contains("8 adapters on q_proj,k_proj,v_proj,o_proj"), lora.stdout)
    let config = try XCTUnwrap(try JSONSerialization.jsonObject(
      with: Data(contentsOf: adapter.appendingPathComponent("adapter_config.json"))) as? [String: Any])
    XCTAssertEqual(config["target_modules"] as? [String], ["q_proj", "k_proj", "v_proj", "o_proj"])
    // QLoRA: each frozen expert stack quantised as one NF4 weight (6 stacks + 8 attention projections).
    let qlora = try CLITests.run(common(s) + ["--method", "qlora", "--output", s.dir.appendingPathComponent("qlora").path])
    XCTAssertEqual(qlora.status, 0, qlora.stderr)
    XCTAssertTrue(qlora.stdout.contains("done: 2 steps"), qlora.stdout)
    XCTAssertTrue(qlora.stdout.contains("14 projections"), qlora.stdout)

    let full = s.dir.appendingPathComponent("full")
    let run = try CLITests.run(common(s) + ["--method", "full", "--output", full.path])
    XCTAssertEqual(run.status, 0, run.stderr)
    let weights = try Data(contentsOf: full.appendingPathComponent("model.safetensors"))
    let header = String(decoding: weights.prefix(200_000), as: UTF8.self)
    for name in ["model.layers.1.block_sparse_moe.experts.3.w2.weight", "model.layers.0.block_sparse_moe.gate.weight"] {
      XCTAssertTrue(header.contains("\"\(name)\""), "\(name) missing from the written model")
    }
    let written = try XCTUnwrap(try JSONSerialization.jsonObject(
      with: Data(contentsOf: full.appendingPathComponent("config.json"))) as? [String: Any])
    XCTAssertEqual(written["num_local_experts"] as? Int, 4)
    XCTAssertEqual(written["router_aux_loss_coef"] as? Double, 0.01)
    // The written model trains again (it loads with the same names and shapes).
    let again = try CLITests.run(["train", "--cpu", "--model", full.path, "--data", s.data.path, "--max-seq-length", "64",
                                  "--max-steps", "1", "--method", "lora", "--output", s.dir.appendingPathComponent("again").path])
    XCTAssertEqual(again.status, 0, again.stderr)
  }

  /// LoRA on the experts (PEFT's target_parameters) trains with LoRA and QLoRA, writes PEFT's
  /// adapter (keys nested as PEFT nests them), and evaluates the same through the adapter and
  /// through the merged model.
  func test_loraOnExperts_trainsEvaluatesAndMerges() throws {
    let s = try setUp("experts")
    let adapter = s.dir.appendingPathComponent("adapter")
    let experts = ["--lora-target-parameters", "mlp.experts.gate_up_proj,mlp.experts.down_proj"]
    let lora = try CLITests.run(common(s) + ["--method", "lora", "--output", adapter.path] + experts)
    XCTAssertEqual(lora.status, 0, lora.stderr)
    XCTAssertTrue(lora.stdout.contains("experts' gate_up_proj,down_proj on 2 layers"), lora.stdout)
    let config = try XCTUnwrap(try JSONSerialization.jsonObject(
      with: Data(contentsOf: adapter.appendingPathComponent("adapter_config.json"))) as? [String: Any])
    XCTAssertEqual(config["target_parameters"] as? [String], ["mlp.experts.down_proj", "mlp.experts.gate_up_proj"])
    let weights = try Data(contentsOf: adapter.appendingPathComponent("adapter_model.safetensors"))
    let header = String(decoding: weights.prefix(20_000), as: UTF8.self)
    for key in ["model.layers.1.mlp.experts.base_layer.lora_B.weight", "model.layers.0.mlp.experts.lora_A.weight"] {
      XCTAssertTrue(header.contains("base_model.model.\(key)"), "\(key) missing")
    }
    let qlora = try CLITests.run(common(s) + ["--method", "qlora", "--output", s.dir.appendingPathComponent("q").path] + experts)
    XCTAssertEqual(qlora.status, 0, qlora.stderr)
    XCTAssertTrue(qlora.stdout.contains("done: 2 steps"), qlora.stdout)

    let merged = s.dir.appendingPathComponent("merged")
    let merge = try CLITests.run(["merge", "--cpu", "--model", s.model.path, "--adapter", adapter.path, "--output", merged.path])
    XCTAssertEqual(merge.status, 0, merge.stderr)
    func loss(_ args: [String], _ tag: String) throws -> Double {
      let json = s.dir.appendingPathComponent("\(tag).json")
      let r = try CLITests.run(["eval", "--cpu", "--max-seq-length", "64", "--data", s.data.path, "--json", json.path] + args)
      XCTAssertEqual(r.status, 0, r.stderr)
      return try XCTUnwrap((try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as? [String: Any])?["loss"] as? Double)
    }
    let viaAdapter = try loss(["--model", s.model.path, "--adapter", adapter.path], "a")
    let viaMerged = try loss(["--model", merged.path], "m")
    let base = try loss(["--model", s.model.path], "b")
    XCTAssertEqual(viaMerged, viaAdapter, accuracy: Self.mergedLossTolerance)
    XCTAssertNotEqual(viaAdapter, base, "the adapter changes the model")
  }

  /// Qwen2-MoE (a shared expert per sparse layer): LoRA (attention and experts) trains; full
  /// fine-tuning writes the shared expert under its checkpoint names and a config transformers
  /// reads (qkv_bias, shared_expert_intermediate_size), and the written model trains again.
  func test_qwen2MoE_sharedExpert_trainsAndWrites() throws {
    let s = try setUp("qwen2moe")
    let model = try Self.tinyMixtral(in: s.dir, qwen2MoE: true)
    let run = ["train", "--cpu", "--model", model.path, "--data", s.data.path, "--max-seq-length", "64",
               "--batch-size", "2", "--max-steps", "2", "--learning-rate", "1e-3"]
    let lora = try CLITests.run(run + ["--method", "lora", "--output", s.dir.appendingPathComponent("lora").path,
                                       "--lora-target-parameters", "mlp.experts.gate_up_proj,mlp.experts.down_proj"])
    XCTAssertEqual(lora.status, 0, lora.stderr)
    XCTAssertTrue(lora.stdout.contains("4 experts, top-2 on 2 of 2 layers"), lora.stdout)
    let full = s.dir.appendingPathComponent("full")
    let f = try CLITests.run(run + ["--method", "full", "--output", full.path])
    XCTAssertEqual(f.status, 0, f.stderr)
    let header = String(decoding: try Data(contentsOf: full.appendingPathComponent("model.safetensors")).prefix(200_000),
                        as: UTF8.self)
    for name in ["model.layers.1.mlp.shared_expert.down_proj.weight", "model.layers.0.mlp.shared_expert_gate.weight",
                 "model.layers.1.mlp.experts.3.up_proj.weight", "model.layers.0.self_attn.k_proj.bias"] {
      XCTAssertTrue(header.contains("\"\(name)\""), "\(name) missing from the written model")
    }
    let written = try XCTUnwrap(try JSONSerialization.jsonObject(
      with: Data(contentsOf: full.appendingPathComponent("config.json"))) as? [String: Any])
    XCTAssertEqual(written["model_type"] as? String, "qwen2_moe")
    XCTAssertEqual(written["shared_expert_intermediate_size"] as? Int, 48)
    let again = try CLITests.run(["train", "--cpu", "--model", full.path, "--data", s.data.path, "--max-seq-length", "64",
                                  "--max-steps", "1", "--method", "qlora", "--output", s.dir.appendingPathComponent("again").path])
    XCTAssertEqual(again.status, 0, again.stderr)
  }

  /// Merged weights vs base + adapter: the same sums in another order (f32, two layers).
  static let mergedLossTolerance = 1e-5

  func test_unsupportedModes_refusedWithWhatToChange() throws {
    let s = try setUp("refuse")
    let out = s.dir.appendingPathComponent("refused")
    for (flags, says) in [(["--method", "lora", "--lora-target-modules", "q_proj,gate_proj"], "adapt the experts with lora_target_parameters"),
                          (["--objective", "reward", "--router-aux-loss-coef", "0.01"],
                           "reward models train without the load-balancing loss"),
                          (["--router-aux-loss-coef=-1"], "use a weight ≥ 0"),
                          (["--lora-target-parameters", "mlp.experts.w1"], "unknown LoRA target parameter"),
                          (["--lora-target-parameters", "mlp.experts.down_proj", "--lora-dropout", "0.1"],
                           "does not work with lora_dropout")] {
      let r = try CLITests.run(common(s) + flags + ["--output", out.path])
      XCTAssertNotEqual(r.status, 0, "\(flags)")
      XCTAssertTrue(r.stderr.contains(says), "\(flags): \(r.stderr)")
      XCTAssertEqual(r.stderr.split(separator: "\n").count, 1, r.stderr)
    }
    XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
    // The weight is a mixture-of-experts setting: a dense model refuses it.
    let dense = try CLITests.run(["train", "--cpu", "--model", try TrainedRun.modelDirectory(), "--data", s.data.path,
                                  "--router-aux-loss-coef", "0.01", "--output", out.path])
    XCTAssertNotEqual(dense.status, 0)
    XCTAssertTrue(dense.stderr.contains("this model is dense"), dense.stderr)
    let denseExperts = try CLITests.run(["train", "--cpu", "--model", try TrainedRun.modelDirectory(), "--data", s.data.path,
                                         "--lora-target-parameters", "mlp.experts.down_proj", "--output", out.path])
    XCTAssertNotEqual(denseExperts.status, 0)
    XCTAssertTrue(denseExperts.stderr.contains("this model is dense (use lora_target_modules)"), denseExperts.stderr)
  }

  /// DPO adds the policy pass's load-balancing loss as TRL's DPOTrainer does (the config's
  /// router_aux_loss_coef on every mixture-of-experts model, even without output_router_logits);
  /// a reward model trains without it, as TRL's RewardTrainer does.
  func test_preferenceObjectives_onExperts() throws {
    let s = try setUp("pref")
    let pairs = s.dir.appendingPathComponent("pairs.jsonl")
    try PreferenceRuns.pairs(0..<4, to: pairs)
    // output_router_logits false: transformers' SFT rule would leave the loss off, TRL's DPO does not.
    let config = s.model.appendingPathComponent("config.json")
    var json = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: config)) as? [String: Any])
    json["output_router_logits"] = false
    try JSONSerialization.data(withJSONObject: json).write(to: config)
    let run = ["train", "--cpu", "--model", s.model.path, "--data", pairs.path, "--max-length", "64",
               "--batch-size", "2", "--max-steps", "2", "--learning-rate", "1e-3", "--method", "lora"]
    let dpo = try CLITests.run(run + ["--objective", "dpo", "--output", s.dir.appendingPathComponent("dpo").path])
    XCTAssertEqual(dpo.status, 0, dpo.stderr)
    XCTAssertTrue(dpo.stdout.contains("load-balancing loss × 0.01"), dpo.stdout)
    XCTAssertTrue(dpo.stdout.contains("done: 2 steps"), dpo.stdout)
    let sft = try CLITests.run(common(s) + ["--method", "lora", "--output", s.dir.appendingPathComponent("sft").path])
    XCTAssertEqual(sft.status, 0, sft.stderr)
    XCTAssertFalse(sft.stdout.contains("load-balancing"), sft.stdout)
    let reward = try CLITests.run(run + ["--objective", "reward", "--output", s.dir.appendingPathComponent("rm").path])
    XCTAssertEqual(reward.status, 0, reward.stderr)
    XCTAssertFalse(reward.stdout.contains("load-balancing"), reward.stdout)
    XCTAssertTrue(reward.stdout.contains("done: 2 steps"), reward.stdout)
  }

  /// `--router-aux-loss-coef` overrides the config: 0 turns the load-balancing loss off. With
  /// `--bf16` the frozen experts are stored 16-bit (the estimate's weights shrink).
  func test_auxLossCoefficient_overridesTheConfig_andBF16Trains() throws {
    let s = try setUp("coef")
    let r = try CLITests.run(common(s) + ["--method", "lora", "--router-aux-loss-coef", "0", "--bf16",
                                          "--output", s.dir.appendingPathComponent("off").path])
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertTrue(r.stdout.contains("4 experts, top-2 on 2 of 2 layers)"), r.stdout)
    XCTAssertTrue(r.stdout.contains("done: 2 steps"), r.stdout)
  }
}
