import ArgumentParser
import Foundation
import VKFCore
import VKFData
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
      step, then --steps measured. Reported: peak resident set (VmHWM: on the CPU backend it \
      holds every tensor), the device-memory high-water mark from the allocator beside the \
      estimate, and per step the submits, host waits, dispatches, barriers, descriptor-set \
      allocations, pipeline creations and bytes uploaded / downloaded.
      """)

  @OptionGroup var backendOptions: BackendOptions

  @Option(help: "Model: a Hugging Face directory, a .gguf file, or org/name in the Hugging Face cache.")
  var model: String

  @Option(help: "lora, qlora or full.")
  var method = "lora"

  @Option(help: "sft, dpo, orpo or reward: the preference objectives' steps take --batch pairs (2 × --batch rows).")
  var objective = "sft"

  @Option(help: "Rows per step (pairs with --objective dpo|reward).")
  var batch = 4

  @Option(help: "Tokens per row (a pair's prompt + answer: TRL's max_length).")
  var seq = 256

  @Option(help: "dpo/reward: prompt tokens of each row (default seq / 2); the rest is the answer.")
  var promptLength: Int?

  @Option(help: "Measured steps (after one warm-up step).")
  var steps = 5

  @Option(help: "LoRA rank (adapters on every projection but lm_head).")
  var loraR = 16

  @Option(help: "Mixture-of-experts models: also adapt these expert parameters (mlp.experts.gate_up_proj,mlp.experts.down_proj).")
  var loraTargetParameters: String?

  @Flag(help: "Recompute activations in the backward pass.")
  var gradientCheckpointing = false

  @Option(name: .customLong("gradient-accumulation-steps"),
          help: "sft: micro-batches of --batch rows per optimizer step (each a different random batch).")
  var accumulation = 1

  @Flag(help: "Run each step's ops eagerly instead of replaying its recordings (to compare the two).")
  var eager = false

  @Flag(help: "Attention through scores, softmax and (B, NH, T, T) probabilities instead of the fused op (to compare).")
  var unfusedAttention = false

  @Option(help: ArgumentHelp("Rows per LM-head chunk: logits of this many tokens are held at once (default from "
    + "the vocabulary, 128 MiB of logits; a value ≥ rows × seq holds them all, as without the fused head, to compare)."))
  var headChunkTokens: Int?

  @Flag(help: "Mixed precision: frozen weights stored bfloat16 (as train --bf16).")
  var bf16 = false

  @Flag(help: "Mixed precision: frozen weights stored float16 (as train --fp16).")
  var fp16 = false

  @Option(help: "Also write the results as JSON to this file.")
  var json: String?

  func run() throws {
    if bf16 && fp16 { throw RecipeError("--bf16 and --fp16 contradict each other; pass one") }
    guard let objective = TrainObjective(rawValue: objective.lowercased()) else {
      throw RecipeError("--objective must be one of \(TrainObjective.allCases.map(\.rawValue).joined(separator: ", ")), got \(self.objective)")
    }
    let prompt = promptLength ?? seq / 2
    if objective.isPreference {
      guard prompt >= 1, prompt < seq else {
        throw RecipeError("--prompt-length \(prompt) must be at least 1 and below --seq \(seq)")
      }
    }
    guard let m = FineTuneMethod(rawValue: method.lowercased()) else {
      throw RecipeError("--method must be one of \(FineTuneMethod.allCases.map(\.rawValue).joined(separator: ", ")), got \(method)")
    }
    for (flag, v) in [("--batch", batch), ("--seq", seq), ("--steps", steps), ("--lora-r", loraR),
                      ("--gradient-accumulation-steps", accumulation), ("--head-chunk-tokens", headChunkTokens ?? 1)]
    where v <= 0 {
      throw RecipeError("\(flag) must be a positive integer, got \(v)")
    }
    if objective.isPreference, accumulation != 1 {
      throw RecipeError("--gradient-accumulation-steps applies to --objective sft only")
    }
    if let json { try OutputChecks.writableParent(of: json, flag: "--json") }
    var loaded = try ModelLoader.load(model)
    if let context = BenchModel.contextLength(loaded), seq > context {
      throw RecipeError("--seq \(seq) exceeds the model's context length \(context)")
    }
    let backend = try backendOptions.makeBackend()
    print("backend: \(backend.name)")
    var settings = TrainSettings()
    settings.method = m; settings.loraR = loraR; settings.loraAlpha = Double(2 * loraR)
    let rows = objective.isPreference ? 2 * batch : batch
    settings.perDeviceTrainBatchSize = rows; settings.gradientCheckpointing = gradientCheckpointing
    settings.bf16 = bf16; settings.fp16 = fp16
    settings.loraTargetParameters = loraTargetParameters.map {
      $0.split(separator: ",").map { String($0).trimmingCharacters(in: .whitespaces) }
    } ?? []
    if !settings.loraTargetParameters.isEmpty { try settings.validateLoRAConfig() }
    // Attention LoRA (and expert LoRA when asked) on experts models; the load-balancing loss as train has it.
    (settings, loaded.shape) = try TrainRun.forExperts(settings, shape: loaded.shape)

    // The benchmark times quantisation itself: no cache.
    let weights = try Quantization.weights(loaded, method: m, doubleQuant: settings.doubleQuant,
                                           frozenStorage: settings.frozenStorage, backend: backend, cache: nil,
                                           log: { print($0) })
    let lora = m == .full ? nil : try LoRAModel(weights: weights, config: settings.loraConfig, seed: 0)
    let llama = try DecoderModel(weights: weights, checkpointing: gradientCheckpointing, headChunkTokens: headChunkTokens,
                               fusedAttention: !unfusedAttention, activationType: settings.frozenStorage)
    let trainables = lora?.trainableTensors ?? weights.trainableTensors
    let optimizer = try AdamW(parameters: trainables, config: settings.trainingConfig.adamW, backend: backend)
    let estimate = settings.memoryEstimate(shape: loaded.shape, seqLength: seq, fusedAttention: !unfusedAttention,
                                           headChunkTokens: headChunkTokens)

    var rng = SplitMix64(seed: 0x5EED)
    // Random rows; targets are the next id, the last of each row ignored.
    func randomRows() -> (ids: [Int32], targets: [Int32]) {
      let ids = (0..<(rows * seq)).map { _ in Int32(rng.next() % UInt64(loaded.shape.vocab)) }
      return (ids, (0..<(rows * seq)).map { i in (i + 1) % seq == 0 ? DecoderModel.ignoreIndex : ids[i + 1] })
    }
    let (ids, targets) = randomRows()
    let tokens = rows * seq * accumulation
    // SFT: the trainer's step engine — one recorded micro-batch replayed per step (or, with
    // --eager, the same ops queued afresh), one submission and one wait.
    let sftTask = lora.map { SFTTask(model: llama, lora: $0) } ?? SFTTask(fullFineTuning: llama)
    let engine = try ReplayedSteps(task: sftTask, optimizer: optimizer, maxTokens: seq, replays: !eager)
    let microBatches = (0..<accumulation).map { k -> Batch in
      let (i, t) = k == 0 ? (ids, targets) : randomRows()
      let rowsData = (0..<rows).map { r in
        TokenizedExample(inputIds: i[(r * seq)..<((r + 1) * seq)].map(Int.init),
                         targets: t[(r * seq)..<((r + 1) * seq)].map(Int.init))
      }
      return Batching.batches(rowsData, batchSize: rows, padID: 0)[0]
    }
    let sftNormalizer = sftTask.lossNormalizer(for: microBatches)
    var step: () throws -> Void = {
      _ = try engine.step(microBatches, dropoutSeeds: microBatches.indices.map(UInt64.init),
                          lossNormalizer: sftNormalizer, lr: 1e-5)
    }
    if objective.isPreference {
      // Pairs sharing a prompt (prompt tokens of the chosen row), answers of seq − prompt tokens.
      let examples = (0..<rows).map { r -> TokenizedExample in
        let p = Int(r / 2) * 2 * seq
        let row = Array(ids[(p)..<(p + prompt)]) + Array(ids[(r * seq + prompt)..<((r + 1) * seq)])
        return PreferencePair(prompt: row[..<prompt].map(Int.init), chosen: row[prompt...].map(Int.init),
                              rejected: []).example(chosen: true)
      }
      let batch = Batching.batches(examples, batchSize: rows, padID: 0)[0]
      let task = try Self.preferenceTask(objective, model: llama, lora: lora, examples: examples,
                                         padID: loaded.eosTokenIDs.first ?? 0)
      let normalizer = task.lossNormalizer(for: [batch])
      guard let staged = task as? StagedTrainingTask else {
        throw ValidationError("bench train: the \(objective.rawValue) task has no staged step")
      }
      // The trainer's step engine too (DPO: reference pass, policy pass; reward: trunk and
      // scalar head; the loss on the device).
      let preferenceEngine = try ReplayedSteps(task: staged, optimizer: optimizer, maxTokens: seq, replays: !eager)
      step = { _ = try preferenceEngine.step([batch], dropoutSeeds: [0], lossNormalizer: normalizer, lr: 1e-5) }
    }
    try step()  // warm-up: arena allocation, pipelines, first touch
    let before = backend.statistics
    let start = DispatchTime.now().uptimeNanoseconds
    for _ in 0..<steps { try step() }
    let perStep = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9 / Double(steps)
    let costs = (backend.statistics - before).per(steps)
    let report = TrainBenchReport(
      backend: backend.name, model: loaded.location.url.path, method: m.rawValue, objective: objective.rawValue,
      batch: batch, seq: seq, gradientAccumulationSteps: accumulation, eager: eager, steps: steps,
      trainableParameters: trainables.reduce(0) { $0 + $1.count }, secondsPerStep: perStep,
      tokensPerSecond: Double(tokens) / perStep, pairsPerSecond: objective.isPreference ? Double(batch) / perStep : nil,
      peakResidentBytes: Self.peakResidentBytes(), estimatedDeviceBytes: estimate.deviceBytes,
      deviceMemoryPeakBytes: backend.statistics.deviceMemoryPeakBytes,
      tensorMemoryPeakBytes: backend.statistics.tensorMemoryPeakBytes, perStep: costs)
    let shape = objective.isPreference ? "\(batch) pairs × \(seq) (prompt \(prompt))"
      : "\(batch)×\(seq)" + (accumulation > 1 ? " × \(accumulation) micro-batches" : "")
    let pairs = report.pairsPerSecond.map { String(format: "%.2f pairs/s, ", $0) } ?? ""
    print(String(format: "%@ %@ %@: %.3f s/step, %@%.1f tokens/s, %@ trainable, peak RSS %@, estimated device %@",
                 objective.rawValue, m.rawValue, shape, perStep, pairs, report.tokensPerSecond,
                 BenchModel.millions(report.trainableParameters),
                 report.peakResidentBytes.map(MemoryEstimate.format) ?? "?", MemoryEstimate.format(estimate.deviceBytes)))
    print("per step: \(costs.summary); device memory peak \(MemoryEstimate.format(report.deviceMemoryPeakBytes)) "
      + "allocated, \(MemoryEstimate.format(report.tensorMemoryPeakBytes)) in tensors")
    if let path = json {
      try AtomicFile.write(try JSONEncoder.pretty.encode(report), to: path)
      print("wrote \(path)")
    }
  }

  /// The DPO task as `train` builds it (reference: the disabled adapter, as TRL without
  /// precompute_ref_log_probs; full fine-tuning: log-probs precomputed before timing), the
  /// ORPO task (no reference), or the reward task with a fresh head.
  static func preferenceTask(_ objective: TrainObjective, model: DecoderModel, lora: LoRAModel?,
                             examples: [TokenizedExample], padID: Int) throws -> TrainingTask {
    if objective == .reward {
      let head = try ScoreHead(hidden: model.weights.shape.hidden, backend: model.backend, seed: 0)
      return lora.map { RewardTask(model: model, lora: $0, head: head, padID: padID) }
        ?? RewardTask(fullFineTuning: model, head: head, padID: padID)
    }
    if objective == .orpo {
      return try lora.map { try DPOTask(model: model, lora: $0, loss: .orpo()) }
        ?? DPOTask(fullFineTuning: model, orpo: .orpo())
    }
    if let lora { return try DPOTask(model: model, lora: lora, loss: DPOLossConfig()) }
    let reference = try ReferenceLogProbs.compute(model: model, examples: examples, batchSize: examples.count, padID: 0)
    return try DPOTask(fullFineTuning: model, reference: reference, loss: DPOLossConfig())
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
  /// sft, dpo or reward.
  var objective: String
  /// Rows (sft) or pairs (dpo, reward) per step.
  var batch: Int
  var seq: Int
  /// Micro-batches per optimizer step (sft).
  var gradientAccumulationSteps: Int
  /// True when the step's ops ran eagerly (`--eager`) instead of replaying recordings.
  var eager: Bool
  var steps: Int
  var trainableParameters: Int
  var secondsPerStep: Double
  var tokensPerSecond: Double
  /// Pairs per second (dpo, reward).
  var pairsPerSecond: Double?
  /// Peak resident set of the process (all memory on the CPU backend).
  var peakResidentBytes: Int?
  /// `MemoryEstimate` of the run's device memory.
  var estimatedDeviceBytes: Int
  /// High-water mark of device memory allocated from the driver (the CPU: every tensor).
  var deviceMemoryPeakBytes: Int
  /// High-water mark of the device memory tensors held (the estimate's subject; the
  /// allocated peak adds the free space of the allocator's blocks).
  var tensorMemoryPeakBytes: Int
  /// Execution costs per measured step (after the warm-up step).
  var perStep: ExecutionCosts

  enum CodingKeys: String, CodingKey {
    case backend, model, method, objective, batch, seq, steps, eager
    case gradientAccumulationSteps = "gradient_accumulation_steps"
    case trainableParameters = "trainable_parameters", secondsPerStep = "seconds_per_step"
    case tokensPerSecond = "tokens_per_second", pairsPerSecond = "pairs_per_second"
    case peakResidentBytes = "peak_resident_bytes", estimatedDeviceBytes = "estimated_device_bytes"
    case deviceMemoryPeakBytes = "device_memory_peak_bytes"
    case tensorMemoryPeakBytes = "tensor_memory_peak_bytes", perStep = "per_step"
  }
}
