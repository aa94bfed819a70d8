import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport
import VKFTokenizer

/// The shared SmolLM2-135M-Instruct (Q4_1 GGUF) answering a chat question greedily, through
/// the path `vkfinetune generate --chat` takes: loader, chat template, KV-cache generation.
/// ~4 s in a debug build on 2 CPU cores.
final class GenerationEndToEndTests: XCTestCase {
  /// shared/ sits beside the repository (CI clones it there too).
  static let modelDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../../../shared/models/smollm2-135m-instruct").standardized.path

  func test_smolLM2_chat_capitalOfFrance_saysParis_cpu() throws {
    guard FileManager.default.fileExists(atPath: Self.modelDirectory) else {
      throw XCTSkip("shared SmolLM2 model not present")
    }
    let loaded = try ModelLoader.load(Self.modelDirectory)
    let template = try XCTUnwrap(loaded.chatTemplate, "SmolLM2-Instruct ships a chat template")
    let tok = loaded.tokenizer
    let text = try template.render(messages: [ChatMessage(role: "user", content: "What is the capital of France?")],
                                   addGenerationPrompt: true,
                                   bosToken: loaded.bosTokenID.flatMap { tok.token(for: $0) } ?? "",
                                   eosToken: loaded.eosTokenIDs.first.flatMap { tok.token(for: $0) } ?? "")
    let prompt = tok.encode(text, addSpecialTokens: false)
    let weights = try DecoderWeights(from: loaded.weights, shape: loaded.shape, backend: TestBackends.cpu, trainable: .none)
    let model = try DecoderModel(weights: weights)
    let generator = TextGenerator(predictor: try CachedLlamaPredictor(model: model, capacity: prompt.count + 20),
                                  decoder: tok, eosTokenIDs: loaded.eosTokenIDs)
    var streamed = ""
    let r = try generator.generate(prompt: prompt, config: GenerationConfig(maxNewTokens: 20)) { streamed += $0 }
    print("SmolLM2: \(r.text.debugDescription) (\(r.stopReason))")
    XCTAssertEqual(streamed, r.text)
    XCTAssertTrue(r.text.contains("Paris"), r.text)
    XCTAssertTrue(loaded.eosTokenIDs.contains(2), "SmolLM2's <|im_end|> is id 2")
  }
}
