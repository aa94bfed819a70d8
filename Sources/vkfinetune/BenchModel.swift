import ArgumentParser
import Foundation
import VKFCore
import VKFModel

/// `vkfinetune bench model`: whole-model tokens/s, forward only and forward + backward with
/// every parameter trainable (full fine-tuning), on synthetic token ids.
struct BenchModel: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "model",
    abstract: "Whole-model throughput: forward, and forward + backward of full fine-tuning.",
    discussion: """
      Token ids are seeded random ids of the model's vocabulary; each measured step is one \
      batch of --batch × --seq tokens after one warm-up step. "full" is forward + backward \
      with every parameter trainable (gradients accumulated; no optimizer step).
      """)

  @OptionGroup var backendOptions: BackendOptions

  @Option(help: "Model: a Hugging Face directory, a .gguf file, or org/name in the Hugging Face cache.")
  var model: String

  @Option(help: "Rows per step.")
  var batch = 4

  @Option(help: "Tokens per row (at most the model's context length).")
  var seq = 256

  @Option(help: "Seconds to spend measuring each mode (after one warm-up step); at least one step runs.")
  var seconds = 10.0

  @Option(help: "Also write the results as JSON to this file.")
  var json: String?

  func validate() throws {
    guard batch > 0 else { throw ValidationError("--batch must be a positive integer, got \(batch)") }
    guard seq > 0 else { throw ValidationError("--seq must be a positive integer, got \(seq)") }
    guard seconds > 0, seconds <= 600 else { throw ValidationError("--seconds must be in (0, 600], got \(seconds)") }
    try Self.checkJSONPath(json)
  }

  /// `--json`'s directory must be writable: fail before minutes of measuring, not after.
  static func checkJSONPath(_ json: String?) throws {
    guard let json else { return }
    let dir = URL(fileURLWithPath: json).deletingLastPathComponent().path
    guard access(dir, W_OK) == 0 else {
      throw ValidationError("--json: cannot write into \(dir) (\(String(cString: strerror(errno))))")
    }
  }

  func run() throws {
    let loaded = try ModelLoader.load(model)
    if let context = Self.contextLength(loaded), seq > context {
      throw ValidationError("--seq \(seq) exceeds the model's context length \(context)")
    }
    let backend = try backendOptions.makeBackend()
    let tokens = batch * seq
    let parameters = loaded.shape.parameterShapes.reduce(0) { $0 + $1.shape.reduce(1, *) }
    print("backend: \(backend.name)")
    print("model: \(loaded.location.url.path) (\(Self.millions(parameters)) parameters, "
      + "\(loaded.shape.layers) layers, hidden \(loaded.shape.hidden), vocab \(loaded.shape.vocab))")
    var rng = SplitMix64(seed: 0x5EED)
    let ids = (0 ..< tokens).map { _ in Int32(rng.next() % UInt64(loaded.shape.vocab)) }
    // Next-token targets within each row; the last position of a row is ignored.
    let targets = (0 ..< tokens).map { i in (i + 1) % seq == 0 ? DecoderModel.ignoreIndex : ids[i + 1] }
    let shape = "\(batch)x\(seq) (\(tokens) tokens)"

    print(Self.header)
    var results: [BenchResult] = [], rates: [String: Double] = [:]
    // Forward and full run one after the other, each model released before the next is
    // built, so peak memory is that of the larger one.
    for mode in ["forward", "full"] {
      let training = mode == "full"
      let weights = try DecoderWeights(from: loaded.weights, shape: loaded.shape, backend: backend,
                                     trainable: training ? .all : .none)
      let llama = try DecoderModel(weights: weights)
      let step = {
        if training {
          try llama.forward(ids: ids, targets: targets, batch: self.batch, computeGradients: true)
          try llama.backward()
        } else {
          try llama.forward(ids: ids, batch: self.batch)
        }
        try backend.synchronize()
      }
      try step()  // warm-up: arena allocation, pipeline creation, first touch of memory
      let (steps, elapsed) = try Self.measure(seconds: seconds, step)
      let perStep = elapsed / Double(steps)
      // ≈ 2 FLOP per parameter per token forward, 6 with the backward (attention excluded).
      let flops = Double(parameters) * Double(tokens) * (training ? 6 : 2)
      let result = BenchResult(op: "model \(mode)", shape: shape, secondsPerRun: perStep,
                               gflops: flops / perStep / 1e9, gbps: nil)
      results.append(result)
      rates[mode] = Double(tokens) / perStep
      print(Self.row(mode: mode, shape: shape, steps: steps, perStep: perStep, tokensPerSecond: Double(tokens) / perStep,
                     gflops: flops / perStep / 1e9))
    }
    if let path = json {
      let report = ModelBenchReport(backend: backend.name, model: loaded.location.url.path, batch: batch, seq: seq,
                                    tokensPerSecond: rates, results: results)
      try AtomicFile.write(try JSONEncoder.pretty.encode(report), to: path)
      print("wrote \(path)")
    }
  }

  // MARK: - Helpers

  /// Runs `step` until `seconds` have passed (at least once); returns the count and the time.
  static func measure(seconds: Double, _ step: () throws -> Void) throws -> (Int, Double) {
    let start = DispatchTime.now().uptimeNanoseconds
    var steps = 0, elapsed = 0.0
    repeat {
      try step()
      steps += 1
      elapsed = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
    } while elapsed < seconds
    return (steps, elapsed)
  }

  /// The trained context: config.json's `max_position_embeddings`, else the GGUF's
  /// `<arch>.context_length`, else nil (unknown: not checked).
  static func contextLength(_ loaded: LoadedModel) -> Int? {
    if let config = loaded.config { return config.maxPositionEmbeddings }
    guard let gguf = loaded.weights as? GGUFWeightSource else { return nil }
    return (try? GGUFModelFacts(file: gguf.file))?.contextLength
  }

  static func millions(_ n: Int) -> String { String(format: "%.1fM", Double(n) / 1e6) }

  static let header = "mode".padding(toLength: 10, withPad: " ", startingAt: 0)
    + "batch×seq".padding(toLength: 24, withPad: " ", startingAt: 0) + "steps   s/step    tokens/s   ~GFLOP/s"

  static func row(mode: String, shape: String, steps: Int, perStep: Double, tokensPerSecond: Double,
                  gflops: Double) -> String {
    mode.padding(toLength: 10, withPad: " ", startingAt: 0) + shape.padding(toLength: 24, withPad: " ", startingAt: 0)
      + String(format: "%5d %8.3f %11.1f %10.1f", steps, perStep, tokensPerSecond, gflops)
  }
}

/// `bench model --json`: the per-mode results plus tokens/s, keyed "forward" and "full".
struct ModelBenchReport: Codable {
  var backend: String
  var model: String
  var batch: Int
  var seq: Int
  var tokensPerSecond: [String: Double]
  var results: [BenchResult]
}

