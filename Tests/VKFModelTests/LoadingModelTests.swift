import Foundation
import XCTest
@testable import VKFModel
import VKFCore
import VKFTokenizer

/// `ModelLoader` on the shared SmolLM2 directory (GGUF + HF files beside it) and on the bare
/// GGUF (metadata only), and `TransformerShape` from config.json vs GGUF metadata.
final class LoadingModelTests: XCTestCase {
  private func sharedGGUF() throws -> ModelLocation {
    .gguf(URL(fileURLWithPath: try SmolLM2Golden.sharedModelDirectory() + "/model.Q4_1.gguf"))
  }

  func test_sharedDirectory_loadsGGUFWithSiblingFiles() throws {
    let directory = try SmolLM2Golden.sharedModelDirectory()
    let loaded = try ModelLoader.load(directory)
    XCTAssertEqual(loaded.location, try sharedGGUF())
    XCTAssertEqual(loaded.shape.hidden, 576)
    XCTAssertEqual(loaded.shape.layers, 30)
    XCTAssertEqual(loaded.shape.heads, 9)
    XCTAssertEqual(loaded.shape.kvHeads, 3)
    XCTAssertEqual(loaded.shape.headDim, 64)
    XCTAssertEqual(loaded.shape.intermediate, 1536)
    XCTAssertEqual(loaded.shape.vocab, 49152)
    XCTAssertTrue(loaded.shape.tiedEmbeddings)
    XCTAssertFalse(loaded.shape.qkvBias)
    XCTAssertEqual(loaded.config?.modelType, "llama")
    XCTAssertEqual(loaded.bosTokenID, 1)
    XCTAssertEqual(loaded.eosTokenIDs.first, 2)
    XCTAssertEqual(loaded.weights.tensorNames.count, loaded.shape.parameterShapes.count)
    let template = try XCTUnwrap(loaded.chatTemplate)
    let golden = try SmolLM2Golden.load()
    let chat = try XCTUnwrap(golden.prompts.first { $0.name == "chat" })
    let rendered = try template.render(
      messages: [ChatMessage(role: "user", content: "Write a haiku about the sea, please.")],
      addGenerationPrompt: true)
    XCTAssertEqual(rendered, chat.text, "chat template renders as transformers' apply_chat_template")
  }

  /// A Mistral GGUF is written with the llama architecture and no window key (llama.cpp runs
  /// it with full attention); a config.json beside it saying mistral and `sliding_window`
  /// gives the model its window, and without one the window is absent.
  func test_llamaArchitectureGGUF_takesTheWindowFromTheConfigBesideIt() throws {
    let shared = URL(fileURLWithPath: try SmolLM2Golden.sharedModelDirectory())
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-mistral-gguf-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let gguf = dir.appendingPathComponent("model.Q4_1.gguf")
    try FileManager.default.createSymbolicLink(at: gguf, withDestinationURL: shared.appendingPathComponent("model.Q4_1.gguf"))
    try FileManager.default.copyItem(at: shared.appendingPathComponent("tokenizer.json"),
                                     to: dir.appendingPathComponent("tokenizer.json"))
    var config = try XCTUnwrap(JSONSerialization.jsonObject(
      with: Data(contentsOf: shared.appendingPathComponent("config.json"))) as? [String: Any])
    config["model_type"] = "mistral"
    config["architectures"] = ["MistralForCausalLM"]
    config["sliding_window"] = 512
    try JSONSerialization.data(withJSONObject: config).write(to: dir.appendingPathComponent("config.json"))
    let loaded = try ModelLoader.load(.gguf(gguf))
    XCTAssertEqual(loaded.config?.modelType, "mistral")
    XCTAssertEqual(loaded.shape.slidingWindows, [Int](repeating: 512, count: 30))
    XCTAssertEqual(try ModelLoader.load(.gguf(gguf), useSiblingFiles: false).shape.slidingWindows, [])
  }

  func test_bareGGUF_buildsEverythingFromMetadata() throws {
    let withFiles = try ModelLoader.load(try sharedGGUF())
    let bare = try ModelLoader.load(try sharedGGUF(), useSiblingFiles: false)
    XCTAssertNil(bare.config)
    XCTAssertEqual(bare.shape.firstDifference(from: withFiles.shape), nil)
    // θ = 100000 is exact in f32, so even the RoPE tables agree bit for bit.
    XCTAssertEqual(bare.shape.invFreq, withFiles.shape.invFreq)
    XCTAssertEqual(bare.shape.rmsNormEps, Float(1e-5))
    XCTAssertEqual(bare.bosTokenID, 1)
    XCTAssertEqual(bare.eosTokenIDs, [2])
    let message = [ChatMessage(role: "user", content: "Hi")]
    XCTAssertEqual(try XCTUnwrap(bare.chatTemplate).render(messages: message, addGenerationPrompt: true),
                   try XCTUnwrap(withFiles.chatTemplate).render(messages: message, addGenerationPrompt: true))
    XCTAssertEqual(bare.tokenizer.encode("<|im_start|>user\nHello there!<|im_end|>"),
                   withFiles.tokenizer.encode("<|im_start|>user\nHello there!<|im_end|>"))
  }

  func test_shapeFromConfig_carriesRopeScalingAndBiases() throws {
    let json = #"""
    {"model_type": "llama", "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2,
     "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 97, "rope_theta": 500000,
     "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
    """#
    let config = try DecoderConfig.decode(Data(json.utf8))
    let shape = try TransformerShape(config: config)
    XCTAssertEqual(shape.headDim, 16)
    XCTAssertEqual(shape.invFreq, config.ropeInverseFrequencies())
    XCTAssertNotEqual(shape.invFreq, RoPE.inverseFrequencies(headDim: 16, theta: 500000))
    XCTAssertFalse(shape.tiedEmbeddings)

    var qwen = config
    qwen.modelType = "qwen2"
    XCTAssertTrue(try TransformerShape(config: qwen).qkvBias)
    var mlpBias = config
    mlpBias.mlpBias = true
    XCTAssertThrowsError(try TransformerShape(config: mlpBias))
  }

  /// The HF fp32 copy made by /work/shared/tools/gguf_to_hf.py (transformers' own GGUF
  /// reader) loads as a Hugging Face directory with the same shape, and its q/k weights equal
  /// ours un-permuted from the GGUF bit for bit. Skipped without the reference copy.
  func test_huggingFaceDirectory_matchesGGUFWeights() throws {
    let env = ProcessInfo.processInfo.environment
    let reference = env["VKF_REF_MODEL"] ?? "/root/.cache/vkf-ref/smollm2-135m-instruct-f32"
    guard FileManager.default.fileExists(atPath: reference + "/model.safetensors") else {
      throw XCTSkip("no HF copy of SmolLM2 at \(reference) (run /work/shared/tools/ref-setup)")
    }
    let hf = try ModelLoader.load(reference)
    let gguf = try ModelLoader.load(try sharedGGUF())
    XCTAssertEqual(hf.location, .huggingFaceDirectory(URL(fileURLWithPath: reference)))
    XCTAssertNil(hf.shape.firstDifference(from: gguf.shape))
    XCTAssertEqual(hf.eosTokenIDs.first, 2)
    XCTAssertNotNil(hf.chatTemplate)
    for name in ["model.layers.0.self_attn.q_proj.weight", "model.layers.29.self_attn.k_proj.weight",
                 "model.layers.7.mlp.down_proj.weight", "model.norm.weight"] {
      XCTAssertEqual(try hf.weights.floats(name), try gguf.weights.floats(name), name)
    }
  }

  func test_missingModel_saysWhatToDo() {
    XCTAssertThrowsError(try ModelLoader.load("/nonexistent/dir/model.gguf")) { error in
      XCTAssertTrue("\(error)".contains("no such file or directory"), "\(error)")
    }
  }
}
