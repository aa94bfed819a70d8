import XCTest
import VKFCore
import VKFModel
import VKFTestSupport

/// Greedy generation through the KV cache equals re-running the full sequence each step.
final class GenerationGreedyTests: XCTestCase {
  private let decoder = ToyDecoder(vocab: (0..<97).map { "<\($0)>" })

  func test_greedy_equalsArgmaxOfFullReforward_cpu() throws { try check(on: TestBackends.cpu) }
  func test_greedy_equalsArgmaxOfFullReforward_vulkan() throws { try check(on: try ModelFixtures.vulkanOrSkip()) }

  private func check(on backend: Backend) throws {
    for name in ["llama_untied", "qwen2_tied"] {
      let g = try GoldenCase.load(name)
      let model = try g.model(on: backend, trainable: .none)
      let prompt = try g.ids.prefix(4).map { Int($0) }
      let config = GenerationConfig(maxNewTokens: 10)
      let generator = TextGenerator(predictor: try CachedLlamaPredictor(model: model, capacity: 32),
                                    decoder: decoder, eosTokenIDs: [])
      let first = try generator.generate(prompt: prompt, config: config)
      let second = try generator.generate(prompt: prompt, config: config)
      XCTAssertEqual(first.tokenIDs, second.tokenIDs, "\(name): deterministic")
      XCTAssertEqual(first.stopReason, .maxTokens)
      // Slow reference: the full training forward over the whole sequence at every step.
      var seq = prompt.map { Int32($0) }, reference: [Int] = []
      for _ in 0..<config.maxNewTokens {
        try model.forward(ids: seq, batch: 1)
        let all = try backend.floats(try XCTUnwrap(model.logits))
        let next = Sampler.argmax(Array(all.suffix(g.shape.vocab)))
        reference.append(next)
        seq.append(Int32(next))
      }
      XCTAssertEqual(first.tokenIDs, reference, "\(name) on \(backend.name)")
      XCTAssertEqual(first.text, reference.map { "<\($0)>" }.joined())
    }
  }
}
