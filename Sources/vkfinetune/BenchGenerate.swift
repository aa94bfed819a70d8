import ArgumentParser
import Foundation
import VKFCore
import VKFModel

/// `vkfinetune bench generate`: new tokens per second of the one-sequence generator (one
/// prompt at a time) and of the batched engine (--batch prompts per pass), side by side in
/// one run on the same prompts, greedy, EOS ignored so every row runs --new-tokens steps.
struct BenchGenerate: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "generate",
    abstract: "Generation throughput: the one-sequence generator against the batched engine.",
    discussion: """
      Prompts are seeded random ids of --prompt-tokens tokens. Both paths prefill each \
      prompt and decode --new-tokens tokens greedily; the ratio is batched / one-sequence \
      new tokens per second (prefill included in both). A warm-up pass of each path runs first.
      """)

  @OptionGroup var backendOptions: BackendOptions

  @Option(help: "Model: a Hugging Face directory, a .gguf file, or org/name in the Hugging Face cache.")
  var model: String

  @Option(help: "Prompts to answer (each path answers all of them).")
  var prompts = 16

  @Option(help: "Rows per batched pass.")
  var batch = 16

  @Option(help: "Tokens per prompt.")
  var promptTokens = 32

  @Option(help: "New tokens per prompt.")
  var newTokens = 64

  @Option(help: "Also write the results as JSON to this file.")
  var json: String?

  func validate() throws {
    for (flag, v) in [("--prompts", prompts), ("--batch", batch), ("--prompt-tokens", promptTokens), ("--new-tokens", newTokens)]
      where v < 1 {
      throw ValidationError("\(flag) must be a positive integer, got \(v)")
    }
    try BenchModel.checkJSONPath(json)
  }

  func run() throws {
    let loaded = try ModelLoader.load(model)
    if let context = BenchModel.contextLength(loaded), promptTokens + newTokens > context {
      throw ValidationError("--prompt-tokens + --new-tokens (\(promptTokens + newTokens)) exceed the model's context \(context)")
    }
    let backend = try backendOptions.makeBackend()
    let llama = try DecoderModel(weights: try DecoderWeights(from: loaded.weights, shape: loaded.shape, backend: backend,
                                                           trainable: .none))
    var rng = SplitMix64(seed: 0x6E4)
    let all = (0..<prompts).map { _ in (0..<promptTokens).map { _ in Int(rng.next() % UInt64(loaded.shape.vocab)) } }
    let config = GenerationConfig(maxNewTokens: newTokens)
    print("backend: \(backend.name)")
    print("model: \(loaded.location.url.path); \(prompts) prompts × \(promptTokens) tokens, \(newTokens) new tokens each")

    let single = TextGenerator(predictor: try CachedLlamaPredictor(model: llama, capacity: promptTokens + newTokens),
                               decoder: loaded.tokenizer, eosTokenIDs: [])
    _ = try single.generate(prompt: all[0], config: GenerationConfig(maxNewTokens: 2))  // warm-up
    let t0 = DispatchTime.now().uptimeNanoseconds
    var singleTokens = 0
    for p in all { singleTokens += try single.generate(prompt: p, config: config).tokenIDs.count }
    let singleSeconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9

    let batched = BatchGenerator(model: llama, decoder: loaded.tokenizer, eosTokenIDs: [])
    let rows = min(batch, prompts)
    try batched.reserve(rows: rows, capacity: promptTokens + newTokens)
    _ = try batched.generate(prompts: Array(all.prefix(rows)), config: GenerationConfig(maxNewTokens: 2))  // warm-up
    let before = backend.statistics
    let t1 = DispatchTime.now().uptimeNanoseconds
    var batchTokens = 0, steps = 0
    for start in stride(from: 0, to: prompts, by: rows) {
      _ = try batched.generate(prompts: Array(all[start..<min(start + rows, prompts)]), config: config)
      batchTokens += batched.statistics.generatedTokens
      steps += batched.statistics.steps
    }
    let batchSeconds = Double(DispatchTime.now().uptimeNanoseconds - t1) / 1e9
    let cost = backend.statistics - before
    let singleRate = Double(singleTokens) / singleSeconds, batchRate = Double(batchTokens) / batchSeconds
    print(String(format: "one-sequence: %d tokens in %.2f s = %.1f tok/s", singleTokens, singleSeconds, singleRate))
    print(String(format: "batched (%d rows): %d tokens in %.2f s = %.1f tok/s", rows, batchTokens, batchSeconds, batchRate))
    print(String(format: "batched / one-sequence: %.2f×", batchRate / singleRate))
    print(String(format: "batched per decode step: %.2f submits, %.2f host waits, %.0f bytes read back",
                 Double(cost.submits) / Double(steps), Double(cost.hostWaits) / Double(steps),
                 Double(cost.bytesDownloaded) / Double(steps)))
    if let path = json {
      let report = GenerateBenchReport(backend: backend.name, model: loaded.location.url.path, prompts: prompts,
                                       batch: rows, promptTokens: promptTokens, newTokens: newTokens,
                                       oneSequenceTokensPerSecond: singleRate, batchedTokensPerSecond: batchRate,
                                       ratio: batchRate / singleRate)
      try AtomicFile.write(try JSONEncoder.pretty.encode(report), to: path)
      print("wrote \(path)")
    }
  }
}

/// `bench generate --json`.
struct GenerateBenchReport: Codable {
  var backend: String
  var model: String
  var prompts: Int
  var batch: Int
  var promptTokens: Int
  var newTokens: Int
  var oneSequenceTokensPerSecond: Double
  var batchedTokensPerSecond: Double
  var ratio: Double
}
