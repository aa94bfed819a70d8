import Foundation
import XCTest

/// QLoRA's NF4 base cache end to end: the first run quantises and stores the base, the second
/// loads it (and trains to the same adapter), a damaged cache file is reported and replaced, and
/// `--no-quantization-cache` leaves no file. (Keys of changed files and settings:
/// QuantizedBaseCacheTests.)
final class QuantizationCacheTests: XCTestCase {
  /// A tiny llama (hidden 64, 2 layers, SmolLM2's tokenizer), random weights from `seed`.
  static func tinyLlama(in dir: URL) throws -> URL {
    let model = dir.appendingPathComponent("tiny-llama")
    try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
    let shared = URL(fileURLWithPath: try TrainedRun.modelDirectory())
    for f in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"] {
      try FileManager.default.copyItem(at: shared.appendingPathComponent(f), to: model.appendingPathComponent(f))
    }
    let (v, h, f, layers, kv, hd) = (49152, 64, 96, 2, 32, 16)
    let config: [String: Any] = [
      "model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": v, "hidden_size": h,
      "intermediate_size": f, "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2,
      "head_dim": hd, "tie_word_embeddings": true, "max_position_embeddings": 512, "bos_token_id": 1, "eos_token_id": 2,
    ]
    try JSONSerialization.data(withJSONObject: config).write(to: model.appendingPathComponent("config.json"))
    var shapes: [(String, [Int])] = [("model.embed_tokens.weight", [v, h]), ("model.norm.weight", [h])]
    for l in 0..<layers {
      let p = "model.layers.\(l)."
      shapes += [(p + "input_layernorm.weight", [h]), (p + "post_attention_layernorm.weight", [h]),
                 (p + "self_attn.q_proj.weight", [4 * hd, h]), (p + "self_attn.k_proj.weight", [kv, h]),
                 (p + "self_attn.v_proj.weight", [kv, h]), (p + "self_attn.o_proj.weight", [h, 4 * hd]),
                 (p + "mlp.gate_proj.weight", [f, h]), (p + "mlp.up_proj.weight", [f, h]), (p + "mlp.down_proj.weight", [h, f])]
    }
    var state: UInt64 = 7
    try ClassificationTests.writeSafetensors(shapes.map { name, shape in
      (name, shape, (0..<shape.reduce(1, *)).map { _ -> Float in
        state = state &* 6364136223846793005 &+ 1442695040888963407
        return name.hasSuffix("norm.weight") ? 1 : (Float(state >> 40) / Float(1 << 24) - 0.5) * 0.1
      })
    }, to: model.appendingPathComponent("model.safetensors"))
    return model
  }

  func test_secondRun_loadsTheCachedBase_andTrainsAlike() throws {
    let dir = try SharedTemporaryDirectories.make(
      FileManager.default.temporaryDirectory.appendingPathComponent("vkf-qcache-\(UUID())"))
    let model = try Self.tinyLlama(in: dir)
    let data = dir.appendingPathComponent("train.json")
    try TrainedRun.alpaca("alpaca_train.json", count: 4, to: data)
    let cache = dir.appendingPathComponent("cache")
    func train(_ name: String, _ extra: [String] = []) throws -> CLITests.Run {
      let r = try CLITests.run(["train", "--cpu", "--model", model.path, "--data", data.path, "--max-seq-length", "128",
                                "--batch-size", "2", "--max-steps", "1", "--method", "qlora", "--quantization-cache-dir",
                                cache.path, "--output", dir.appendingPathComponent(name).path] + extra)
      XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
      return r
    }
    let cachedFiles = { (try? FileManager.default.contentsOfDirectory(atPath: cache.path))?.filter { $0.hasSuffix(".safetensors") } ?? [] }
    let first = try train("first")
    XCTAssertTrue(first.output.contains("NF4 base cached at"), first.output)
    XCTAssertEqual(cachedFiles().count, 1)
    let second = try train("second")
    XCTAssertTrue(second.output.contains("NF4 projections from the cache"), second.output)
    let adapter = { (name: String) in FileManager.default.contents(atPath: dir.appendingPathComponent("\(name)/adapter_model.safetensors").path) }
    XCTAssertNotNil(adapter("first"))
    XCTAssertEqual(adapter("first"), adapter("second"), "the cached base trains to the same adapter")

    // A damaged file is reported, replaced, and the run goes on.
    for f in cachedFiles() { try Data("damaged".utf8).write(to: cache.appendingPathComponent(f)) }
    let damaged = try train("damaged")
    XCTAssertTrue(damaged.output.contains("unusable") && damaged.output.contains("NF4 base cached at"), damaged.output)
    // Off: nothing is read or written.
    try FileManager.default.removeItem(at: cache)
    let off = try train("off", ["--no-quantization-cache"])
    XCTAssertFalse(off.output.contains("NF4 base cached") || off.output.contains("from the cache"), off.output)
    XCTAssertFalse(FileManager.default.fileExists(atPath: cache.path))
  }
}

private extension CLITests.Run {
  /// Progress lines (stdout) and warnings (stderr) together.
  var output: String { stdout + stderr }
}
