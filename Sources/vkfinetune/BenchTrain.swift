import ArgumentParser
import Foundation
import VKFCore
import VKFModel
import VKFPEFT
import VKFTrain

/// `vkfinetune bench train`: steady-state training steps (forward, backward, clipped AdamW
/// update) of LoRA, QLoRA or full fine-tuning on synthetic token ids, and peak memory.
struct BenchTrain: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "train",
    abstract: "Training throughput (tokens/s) and peak memory of LoRA, QLoRA or full fine-tuning.",
    discussion: """
      Each step is one micro-batch of --batch × --seq seeded random ids, every target trained: \
      zero gradients, forward, backward, gradient norm, AdamW update, synchronize. One warm-up \
      step, then --steps measured. Peak memory is the process's peak resident set (VmHWM: on \
      the CPU backend it holds every tensor) plus the run's device-memory estimate (the \
      backends keep no allocation counter yet).
      """)

  @OptionGroup var backendOptions: BackendOptions

  @Option(help: "Model: a Hugging Face directory, a .gguf file, or org/name in the Hugging Face cache.")
  var model: String

  @Option(help: "lora, qlora or full.")
  var method = "lora"

  @Option(help: "Rows per step.")
  var batch = 4

  @Option(help: "Tokens per row.")
  var seq = 256

  @Option(help: "Measured steps (after one warm-up step).")
  var steps = 5

  @Option(help: "LoRA rank (adapters on every projection but lm_head).")
  var loraR = 16

  @Flag(help: "Recompute activations in the backward pass.")
  var gradientCheckpointing = false

  @Option(help: "Also write the results as JSON to this file.")
  var json: String?

  func run() throws {
    guard let m = FineTuneMethod(rawValue: method.lowercased()) else {
      throw RecipeError("--method must be one of \(FineTuneMethod.allCases.map(\.rawValue).joined(separator: ", ")), got \(method)")
    }
    for (flag, v) in [("--batch", batch), ("--seq", seq), ("--steps", steps), ("--lora-r", loraR)] where v <= 0 {
      throw RecipeError("\(flag) must be a positive integer, got \(v)")
    }
    if let json { try OutputChecks.writableParent(of: json, flag: "--json") }
    let loaded = try ModelLoader.load(model)
    if let context = BenchModel.contextLength(loaded), seq > context {
      throw RecipeError("--seq \(seq) exceeds the model's context length \(context)")
    }
    let backend = try backendOptions.makeBackend()
    print("backend: \(backend.name)")
    var settings = TrainSettings()
    settings.method = m; settings.loraR = loraR; settings.loraAlpha = Double(2 * loraR)
    settings.perDeviceTrainBatchSize = batch; settings.gradientCheckpointing = gradientCheckpointing

    let weights = try LlamaWeights(from: loaded.weights, shape: loaded.shape, backend: backend,
                                   trainable: m == .full ? .all : .none)
    if m == .qlora { try Quantization.quantize(weights, doubleQuant: settings.doubleQuant, log: { print($0) }) }
    let lora = m == .full ? nil : try LoRAModel(weights: weights, config: settings.loraConfig, seed: 0)
    let llama = try LlamaModel(weights: weights, checkpointing: gradientCheckpointing)
    let trainables = lora?.trainableTensors ?? weights.trainableTensors
    let optimizer = try AdamW(parameters: trainables, config: settings.trainingConfig.adamW, backend: backend)
    let estimate = settings.memoryEstimate(shape: loaded.shape, seqLength: seq)

    var rng = SplitMix64(seed: 0x5EED)
    let tokens = batch * seq
    let ids = (0..<tokens).map { _ in Int32(rng.next() % UInt64(loaded.shape.vocab)) }
    let targets = (0..<tokens).map { i in (i + 1) % seq == 0 ? LlamaModel.ignoreIndex : ids[i + 1] }
    let step = {
      if let lora { try lora.zeroGradients() } else { try weights.zeroGradients() }
      try llama.forward(ids: ids, targets: targets, batch: self.batch, computeGradients: true)
      try llama.backward()
      _ = try optimizer.gradientNorm()
      try optimizer.update(lr: 1e-5)
      try backend.synchronize()
    }
    try step()  // warm-up: arena allocation, pipelines, first touch
    let start = DispatchTime.now().uptimeNanoseconds
    for _ in 0..<steps { try step() }
    let perStep = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 / Double(steps)
    let report = TrainBenchReport(
      backend: backend.name, model: loaded.location.url.path, method: m.rawValue, batch: batch, seq: seq, steps: steps,
      trainableParameters: trainables.reduce(0) { $0 + $1.count }, secondsPerStep: perStep,
      tokensPerSecond: Double(tokens) / perStep, peakResidentBytes: Self.peakResidentBytes(),
      estimatedDeviceBytes: estimate.deviceBytes)
    print(String(format: "%@ %d×%d: %.3f s/step, %.1f tokens/s, %@ trainable, peak RSS %@, estimated device %@",
                 m.rawValue, batch, seq, perStep, report.tokensPerSecond, BenchModel.millions(report.trainableParameters),
                 report.peakResidentBytes.map(MemoryEstimate.format) ?? "?", MemoryEstimate.format(estimate.deviceBytes)))
    if let path = json {
      try AtomicFile.write(try JSONEncoder.pretty.encode(report), to: path)
      print("wrote \(path)")
    }
  }

  /// VmHWM from /proc/self/status (Linux), in bytes.
  static func peakResidentBytes() -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
          let kib = Int(line.split(separator: " ").dropFirst().first ?? "") else { return nil }
    return kib * 1024
  }
}

/// `bench train --json`.
struct TrainBenchReport: Codable {
  var backend: String
  var model: String
  var method: String
  var batch: Int
  var seq: Int
  var steps: Int
  var trainableParameters: Int
  var secondsPerStep: Double
  var tokensPerSecond: Double
  /// Peak resident set of the process (all memory on the CPU backend).
  var peakResidentBytes: Int?
  /// `MemoryEstimate` of the run's device memory.
  var estimatedDeviceBytes: Int
}
