import XCTest
import VKFCore
import VKFModel
import VKFTestSupport
import VKFVulkan

/// The batched engine (`BatchGenerator`): left-padded prompts of different lengths give, row
/// by row, the tokens the one-sequence generator gives each prompt alone; rows stop on their
/// own; sampling is seeded and per row.
final class GenerationBatchTests: XCTestCase {
  private let decoder = ToyDecoder(vocab: (0..<97).map { "<\($0)>" })

  /// Four prompts of 1–6 tokens from a fixture's ids (so padding runs 0–5 slots).
  private func prompts(_ g: GoldenCase) throws -> [[Int]] {
    let ids = try g.ids.map { Int($0) }
    return [Array(ids[0..<6]), Array(ids[1..<2]), Array(ids[2..<5]), Array(ids[3..<9])]
  }

  func test_greedyBatch_equalsOneSequenceGenerator_tokenForToken_cpu() throws {
    try checkGreedy(on: TestBackends.cpu, names: ["llama_untied", "qwen2_tied", "gemma2", "mistral_window", "mixtral"])
  }
  func test_greedyBatch_equalsOneSequenceGenerator_tokenForToken_vulkan() throws {
    try checkGreedy(on: try ModelFixtures.vulkanOrSkip(), names: ["llama_untied", "gemma2", "mixtral"])
  }

  /// Temperature 0 with and without a repetition penalty, prefill chunked (3 tokens per
  /// pass) or not: every row equals `TextGenerator` on its prompt alone.
  private func checkGreedy(on backend: Backend, names: [String]) throws {
    for name in names {
      let g = try GoldenCase.load(name)
      let model = try g.model(on: backend, trainable: .none)
      let prompts = try prompts(g)
      for (penalty, chunk) in [(Float(1), 128), (1.5, 3)] {
        let config = GenerationConfig(maxNewTokens: 7, repetitionPenalty: penalty)
        let batch = BatchGenerator(model: model, decoder: decoder, eosTokenIDs: [], prefillChunk: chunk)
        let got = try batch.generate(prompts: prompts, config: config)
        for (r, prompt) in prompts.enumerated() {
          let one = TextGenerator(predictor: try CachedLlamaPredictor(model: model, capacity: 32, prefillChunk: chunk),
                                  decoder: decoder, eosTokenIDs: [])
          let want = try one.generate(prompt: prompt, config: config)
          XCTAssertEqual(got[r].tokenIDs, want.tokenIDs, "\(name) on \(backend.name), penalty \(penalty), row \(r)")
          XCTAssertEqual(got[r].text, want.text)
          XCTAssertEqual(got[r].stopReason, .maxTokens)
          XCTAssertEqual(got[r].promptTokens, prompt.count)
        }
        XCTAssertEqual(batch.statistics.generatedTokens, 4 * 7)
        XCTAssertEqual(batch.statistics.steps, 7)
      }
    }
    if let vk = backend as? VulkanBackend { XCTAssertEqual(vk.validationMessages, []); vk.clearValidationMessages() }
  }

  /// EOS, a stop string, the context limit and max tokens each end one row, the others go on.
  func test_rowsStopOnTheirOwn() throws {
    let g = try GoldenCase.load("llama_untied")
    let model = try g.model(on: TestBackends.cpu, trainable: .none)
    let prompts = try prompts(g)
    let config = GenerationConfig(maxNewTokens: 6)
    let free = try BatchGenerator(model: model, decoder: decoder, eosTokenIDs: []).generate(prompts: prompts, config: config)
    // Row 0's third token as EOS; row 2's second token's text as a stop string.
    let eos = free[0].tokenIDs[2], stop = "<\(free[2].tokenIDs[1])>"
    let limit = prompts[3].count + 4
    var stopping = config
    stopping.stopStrings = [stop]
    let gen = BatchGenerator(model: model, decoder: decoder, eosTokenIDs: [eos], contextLimit: limit)
    let got = try gen.generate(prompts: prompts, config: stopping)
    for r in prompts.indices {
      // Each row ends at the first of its own events, in TextGenerator's order.
      var want = free[r].tokenIDs, reason = StopReason.maxTokens
      if let e = want.firstIndex(of: eos) { want = Array(want[..<e]); reason = .eos(eos) }
      if let s = want.firstIndex(where: { "<\($0)>" == stop }) { want = Array(want[...s]); reason = .stopString(stop) }
      if prompts[r].count + want.count >= limit {
        want = Array(want.prefix(limit - prompts[r].count)); reason = .contextFull
      }
      XCTAssertEqual(got[r].tokenIDs, want, "row \(r)")
      XCTAssertEqual(got[r].stopReason, reason, "row \(r)")
      XCTAssertFalse(got[r].text.contains(stop), "row \(r): the stop string is left out")
    }
    XCTAssertEqual(got[0].stopReason, .eos(eos))
    XCTAssertEqual(got[3].stopReason, .contextFull)
  }

  /// Sampling: the same seed gives the same rows; rows with the same prompt differ; another
  /// seed gives other text; every token is one of the top-k.
  func test_sampling_isSeededAndPerRow() throws {
    let g = try GoldenCase.load("llama_untied")
    let model = try g.model(on: TestBackends.cpu, trainable: .none)
    let prompt = try Array(g.ids.prefix(4)).map { Int($0) }
    let prompts = [[Int]](repeating: prompt, count: 6)
    let config = GenerationConfig(maxNewTokens: 8, temperature: 1.5, topK: 20, seed: 7)
    let gen = BatchGenerator(model: model, decoder: decoder, eosTokenIDs: [])
    let a = try gen.generate(prompts: prompts, config: config)
    let b = try gen.generate(prompts: prompts, config: config)
    XCTAssertEqual(a, b, "the same seed draws the same tokens")
    XCTAssertGreaterThan(Set(a.map(\.tokenIDs)).count, 1, "rows of one prompt draw their own tokens")
    var other = config
    other.seed = 8
    XCTAssertNotEqual(try gen.generate(prompts: prompts, config: other).map(\.tokenIDs), a.map(\.tokenIDs))
    // The first token of every row is among the prompt's top 20.
    let logits = try CachedLlamaPredictor(model: model, capacity: 16).append(prompt)
    var filtered = logits
    Sampler.topKFilter(&filtered, k: 20)
    for row in a { XCTAssertTrue(filtered[row.tokenIDs[0]].isFinite, "token \(row.tokenIDs[0]) is outside the top 20") }
  }

  /// On the device a decode step is one submission and one host wait, reads back only the
  /// B token ids (4 bytes each) and creates no pipeline: the difference between a 6-step
  /// and a 4-step call of the same batch is two such steps.
  func test_decodeStep_costsOneSubmitOneWaitAndTheIdsOnly_vulkan() throws {
    let backend = try ModelFixtures.vulkanOrSkip()
    let g = try GoldenCase.load("llama_untied")
    let model = try g.model(on: backend, trainable: .none)
    let prompts = try prompts(g)
    let gen = BatchGenerator(model: model, decoder: decoder, eosTokenIDs: [])
    try gen.reserve(rows: prompts.count, capacity: 16)
    for penalty in [Float(1), 1.3] {
      func cost(_ steps: Int) throws -> ExecutionStatistics {
        let before = backend.statistics
        _ = try gen.generate(prompts: prompts, config: GenerationConfig(maxNewTokens: steps, temperature: 0.7,
                                                                        topP: 0.9, repetitionPenalty: penalty))
        return backend.statistics - before
      }
      _ = try cost(6)  // warm-up: pipelines
      let long = try cost(6), short = try cost(4)
      let two = long - short
      XCTAssertEqual(two.submits, 2, "penalty \(penalty)")
      XCTAssertEqual(two.hostWaits, 2)
      XCTAssertEqual(two.bytesDownloaded, 2 * 4 * prompts.count, "only the token ids come back")
      XCTAssertEqual(two.pipelineCreations, 0)
    }
  }

  /// With the training arena reserved large enough the cache lives in it (no second
  /// allocation for its keys, values and scratch), answers are unchanged, and a training
  /// pass in between (which overwrites that memory) changes nothing either.
  func test_cacheInTheActivationArena_givesTheSameAnswers() throws {
    let g = try GoldenCase.load("llama_untied")
    let model = try g.model(on: TestBackends.cpu, trainable: .none)
    let prompts = try prompts(g)
    let config = GenerationConfig(maxNewTokens: 5, temperature: 0.9, seed: 3)
    let own = try BatchGenerator(model: model, decoder: decoder, eosTokenIDs: []).generate(prompts: prompts, config: config)
    try model.reserve(batch: 4, tokens: 64)
    let shared = BatchGenerator(model: model, decoder: decoder, eosTokenIDs: [], sharesActivationMemory: true)
    XCTAssertEqual(try shared.generate(prompts: prompts, config: config), own)
    XCTAssertTrue(shared.cacheSharesActivations, "the reserved arena holds the cache")
    try model.forward(ids: try g.ids, batch: g.batch)
    XCTAssertEqual(try shared.generate(prompts: prompts, config: config), own)
    // Too small an arena: the cache allocates its own memory and still answers the same.
    let small = try g.model(on: TestBackends.cpu, trainable: .none)
    try small.reserve(batch: 1, tokens: 2)
    let alone = BatchGenerator(model: small, decoder: decoder, eosTokenIDs: [], sharesActivationMemory: true)
    XCTAssertEqual(try alone.generate(prompts: prompts, config: config), own)
    XCTAssertFalse(alone.cacheSharesActivations)
  }

  /// `recordsEntropy`: each row's entropy sum is that of the one-sequence logits it drew from.
  func test_recordedEntropy_isTheDrawnDistributions() throws {
    let g = try GoldenCase.load("llama_untied")
    let model = try g.model(on: TestBackends.cpu, trainable: .none)
    let prompts = try prompts(g)
    let gen = BatchGenerator(model: model, decoder: decoder, eosTokenIDs: [])
    gen.recordsEntropy = true
    let got = try gen.generate(prompts: prompts, config: GenerationConfig(maxNewTokens: 4))
    for (r, prompt) in prompts.enumerated() {
      let one = try CachedLlamaPredictor(model: model, capacity: 16)
      var logits = try one.append(prompt), want = 0.0
      for id in got[r].tokenIDs {
        want -= Sampler.softmax(logits).reduce(0) { $0 + ($1 > 0 ? $1 * log($1) : 0) }
        logits = try one.append([id])
      }
      XCTAssertEqual(got[r].entropySum, want, accuracy: 1e-4, "row \(r)")
    }
  }

  func test_badPrompts_throwNamingThePrompt() throws {
    let g = try GoldenCase.load("llama_untied")
    let model = try g.model(on: TestBackends.cpu, trainable: .none)
    let gen = BatchGenerator(model: model, decoder: decoder, eosTokenIDs: [], contextLimit: 8)
    let config = GenerationConfig(maxNewTokens: 2)
    XCTAssertThrowsError(try gen.generate(prompts: [], config: config))
    XCTAssertThrowsError(try gen.generate(prompts: [[1], []], config: config)) { e in
      XCTAssertTrue("\(e)".contains("prompt 1 is empty"), "\(e)")
    }
    XCTAssertThrowsError(try gen.generate(prompts: [[1, 2, 3, 4, 5, 6, 7, 8]], config: config)) { e in
      XCTAssertTrue("\(e)".contains("prompt 0 has 8 tokens"), "\(e)")
    }
    XCTAssertThrowsError(try gen.generate(prompts: [[1, 500]], config: config)) { e in
      XCTAssertTrue("\(e)".contains("token id 500"), "\(e)")
    }
  }
}
