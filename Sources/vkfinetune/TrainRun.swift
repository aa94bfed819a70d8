import Foundation
import Synchronization
import VKFCore
import VKFData
import VKFModel
import VKFPEFT
import VKFTokenizer
import VKFTrain

/// One `train` run: load the model, quantise (QLoRA), attach adapters, load the data, check
/// memory, train (or resume), write the adapter or model into the output directory.
struct TrainRun {
  var settings: TrainSettings
  var backendOptions: BackendOptions
  var resume: Bool
  var overwrite: Bool

  func run() throws {
    var s = settings
    guard let modelArg = s.model, let dataPath = s.data, let outputPath = s.outputDir else {
      throw RecipeError("model, data and output_dir are required")  // validate() already said which
    }
    if s.objective.isEncoder {
      return try ClassificationRun(settings: s, backendOptions: backendOptions, resume: resume, overwrite: overwrite).run()
    }
    if case .huggingFaceDirectory(let dir) = try ModelLocator.resolve(modelArg), BertConfig.isBert(dir) {
      throw RecipeError("\(modelArg) is a BERT encoder (model_type bert): train it with --objective classification or mlm")
    }
    let output = URL(fileURLWithPath: outputPath).standardizedFileURL
    let progress = ProgressLine()
    if resume { try ObjectiveRecord.check(s, against: output) }

    // Model and data first: the cheap failures (bad file, bad record) come before any compute.
    var loaded = try ModelLoader.load(modelArg)
    (s, loaded.shape) = try Self.forExperts(s, shape: loaded.shape)
    let data = s.objective.isPreference
      ? try TrainData.loadPairs(settings: s, model: loaded, trainFile: dataPath)
      : s.objective == .grpo || s.objective == .ppo ? try TrainData.loadPrompts(settings: s, model: loaded, trainFile: dataPath)
      : s.objective == .kto ? try TrainData.loadUnpaired(settings: s, model: loaded, trainFile: dataPath)
      : try TrainData.load(settings: s, model: loaded, trainFile: dataPath)
    let backend = try backendOptions.makeBackend()
    progress.message("backend: \(backend.name)")
    progress.message("model: \(loaded.location.url.path) (\(loaded.shape.layers) layers, hidden \(loaded.shape.hidden)"
      + loaded.shape.featureSummary.map { ", " + $0 }.joined() + ")")
    progress.message(data.summary)
    for w in data.warnings { progress.warning(w) }

    // Memory: print the estimate, refuse a run over the budget with advice — before any
    // upload. A preference micro-batch holds chosen and rejected rows of each pair; rows
    // run padded to their step shape (a multiple of 64 tokens on a GPU).
    // Without a --memory-budget the budget is the device's memory; over it, gradient
    // checkpointing turns on by itself (said so), optimizer state `auto` pages to the host,
    // and what still does not fit is refused with advice.
    let rowLength = StepShape(rows: 1, tokens: data.longestRow, maxTokens: s.maxSeqLength,
                              granularity: StepShape.granularity(for: backend)).tokens
    let deviceBudget = s.memoryBudget == nil ? backend.memoryCapacity : nil
    var planned = s
    planned.memoryBudget = s.memoryBudget ?? deviceBudget
    func estimateOf(_ p: TrainSettings) -> MemoryEstimate {
      var rows = p
      if p.objective.isPreference { rows.perDeviceTrainBatchSize *= 2 }
      return rows.memoryEstimate(shape: loaded.shape, seqLength: rowLength)
    }
    var estimate = estimateOf(planned)
    if let budget = planned.memoryBudget, estimate.deviceBytes > budget, !planned.gradientCheckpointing {
      var checkpointed = planned
      checkpointed.gradientCheckpointing = true
      let smaller = estimateOf(checkpointed)
      if smaller.deviceBytes < estimate.deviceBytes {
        progress.message("gradient checkpointing: on, since the estimate without it (\(MemoryEstimate.format(estimate.deviceBytes))) "
          + "exceeds \(deviceBudget == nil ? "--memory-budget" : "the device's memory") (\(MemoryEstimate.format(budget)))")
        planned = checkpointed
        estimate = smaller
      }
    }
    progress.message("estimated memory:\n" + estimate.table)
    if let budget = planned.memoryBudget {
      try estimate.check(budget: budget, of: deviceBudget == nil ? "the budget" : "the device's memory")
    }
    // An out-of-memory error anywhere below (loading, quantising, adapters, optimizer state,
    // training) ends in the estimate's one line of advice.
    func advised<T>(_ body: () throws -> T) throws -> T { try Self.advised(estimate, progress, body) }

    // Weights: frozen for adapters, every parameter trainable for full fine-tuning.
    let weights = try advised {
      try Quantization.weights(loaded, method: s.method, doubleQuant: s.doubleQuant,
                               frozenStorage: s.frozenStorage, backend: backend, cache: s.quantizationCacheSetting,
                               log: { progress.message($0) })
    }
    let lora = s.method == .full ? nil
      : try advised { try LoRAModel(weights: weights, config: s.loraConfig, seed: UInt64(s.seed)) }
    if let qat = s.qat {
      let n = try FakeQuantAdapter.attach(to: weights, kind: qat)
      progress.message("QAT: \(n) projections train under \(qat == .q4_0 ? "Q4_0 (int4, blocks of 32)" : "int8 per-channel") "
        + "fake quantisation, straight-through gradients to the f32 weights")
    }
    let model = try advised {
      try DecoderModel(weights: weights, checkpointing: planned.gradientCheckpointing, activationType: s.frozenStorage)
    }
    if let lora {
      let n = lora.trainableTensors.reduce(0) { $0 + $1.count }
      let experts = lora.expertAdapters.isEmpty ? ""
        : ", experts' \(s.loraConfig.resolvedTargetParameters.joined(separator: ",")) on \(lora.expertAdapters.count) layers"
      progress.message("LoRA: r \(s.loraR), alpha \(s.loraAlpha), \(lora.adapters.count) adapters on "
        + "\(s.loraConfig.resolvedTargetModules.joined(separator: ","))\(experts), \(n) trainable parameters")
    }

    let placement: OptimizerStatePlacement
    switch s.optimizerState {
    case .device: placement = .device
    case .host: placement = .host
    case .auto: placement = planned.memoryBudget.map { .auto(budgetBytes: $0) } ?? .device
    }

    // From here the run writes into its output directory: a failure puts it back as it was,
    // or keeps the run's checkpoints (and says so).
    try Self.transacted(output, overwrite: overwrite, progress: progress) {
      try train(loaded: loaded, data: data, weights: weights, lora: lora, model: model, placement: placement,
                estimate: estimate, output: output, progress: progress)
    }
  }

  /// Runs `body` (which writes into `output`) with interrupts caught: a failure puts the
  /// directory back as it was, or keeps the run's checkpoints and says so.
  static func transacted(_ output: URL, overwrite: Bool, progress: ProgressLine, _ body: () throws -> Void) throws {
    let transaction = try OutputTransaction.begin(output, overwrite: overwrite)
    do {
      try Interrupts.installed { try body() }
      transaction.commit()
    } catch {
      progress.finishLine()
      guard let kept = transaction.rollback() else { throw error }
      let message = RecipeFile.message(error)
      // The trainer's own line may already name the checkpoint left.
      if message.contains(kept.name) { throw error }
      throw RecipeError(message + "; " + kept.clause)
    }
  }

  /// The part of `run` that writes into the output directory.
  private func train(loaded: LoadedModel, data: TrainData, weights: DecoderWeights, lora: LoRAModel?, model: DecoderModel,
                     placement: OptimizerStatePlacement, estimate: MemoryEstimate, output: URL,
                     progress: ProgressLine) throws {
    let s = settings
    func advised<T>(_ body: () throws -> T) throws -> T { try Self.advised(estimate, progress, body) }
    if !resume { try ObjectiveRecord.write(s, into: output) }
    let made = try advised {
      try makeTask(model: model, lora: lora, data: data, output: output, progress: progress, loaded: loaded)
    }
    let task = made.task, scoreHead = made.scoreHead
    if lora == nil {
      progress.message("full fine-tuning: \(task.trainableTensors.reduce(0) { $0 + $1.count }) trainable parameters")
    }
    let trainer = try advised {
      try Trainer(task: task, config: s.trainingConfig, train: data.train, validation: data.validation,
                  outputDirectory: output, optimizerState: placement,
                  otherDeviceBytes: estimate.deviceBytesExcludingOptimizer, padID: data.padID)
    }
    let objective = s.objective
    trainer.onEvent = { event in Self.report(event, progress, objective: objective) }
    trainer.shouldStop = { Interrupts.requested }
    if CrashSeam.target != nil {
      trainer.checkpointFileWritten = { [unowned trainer] in CrashSeam.written("\(CheckpointLayout.prefix)\(trainer.step)/\($0)") }
    }
    if !data.validation.isEmpty {
      // Best adapter (or model) so far, beside the final one.
      trainer.saveBest = { _, _ in
        try OutputWriter.write(lora: lora, weights: weights, model: loaded, settings: s,
                               into: output.appendingPathComponent(OutputTransaction.bestName), scoreHead: scoreHead)
      }
    }
    if resume {
      let from = try trainer.resume(from: output)
      progress.message("resumed from \(from.lastPathComponent) at step \(trainer.step)/\(trainer.totalSteps)")
    }
    let rows = s.objective.isPreference ? "pairs" : "rows"
    // Where the step count comes from, so a max_steps of −1 (transformers' "unset") is visible.
    let epochs = StepInterval.formatted(s.numTrainEpochs)
    let origin = s.maxSteps > 0 ? "max_steps \(s.maxSteps)"
      : "\(epochs) epoch\(s.numTrainEpochs == 1 ? "" : "s"), max_steps unset"
    progress.message("training (\(s.objective.rawValue)): \(trainer.totalSteps) optimizer step\(trainer.totalSteps == 1 ? "" : "s") "
      + "(\(origin)), "
      + "\(s.perDeviceTrainBatchSize) × \(s.gradientAccumulationSteps) \(rows) per step, lr \(s.lrSchedulerType) "
      + ProgressLine.scientific(s.learningRate))
    progress.message(Self.scheduleLine(s, totalSteps: trainer.totalSteps, validation: data.validation.count))

    let summary = try advised { try trainer.train() }
    progress.finishLine()
    // A final checkpoint, so `--resume` can continue this run (e.g. with a larger max_steps).
    if CheckpointLayout.checkpoints(in: output).first?.step != trainer.step { try trainer.saveCheckpoint() }
    try OutputWriter.write(lora: lora, weights: weights, model: loaded, settings: s, into: output, scoreHead: scoreHead)
    if let ppo = task as? PPOTask { try Self.writeValueHead(ppo, into: output) }
    var line = String(format: "done: %d steps, final loss %.4f", summary.steps, summary.finalLoss)
    if let best = summary.bestEvaluation { line += String(format: ", best eval loss %.4f at step %d", best.loss, best.step) }
    if summary.stoppedEarly { line += " (stopped early; the best weights were written)" }
    progress.message(line)
    let what = s.objective == .reward ? (s.method == .full ? "reward model" : "reward adapter")
      : (s.method == .full ? "model" : "adapter")
    progress.message("wrote \(what) to \(output.path)")
  }

  /// When the run evaluates, checkpoints and logs, with the value each came from: a fraction
  /// of the run (transformers' reading of eval_steps < 1) shows the step count it became, and
  /// the 0s that mean "at the end" / "all" / "off" are spelled out.
  static func scheduleLine(_ s: TrainSettings, totalSteps: Int, validation: Int) -> String {
    func every(_ key: String, _ value: Double) -> String? { StepInterval.describe(key, value, totalSteps: totalSteps) }
    var parts: [String] = []
    if validation > 0 {
      let unit = s.objective.isPreference ? "pairs" : "examples"
      let count = s.objective.isPreference ? validation / 2 : validation
      parts.append("evaluate on \(count) \(unit) " + (every("eval_steps", s.evalSteps).map { "\($0) and at the end" } ?? "at the end")
        + (s.earlyStoppingPatience > 0 ? ", stopping after \(s.earlyStoppingPatience) without a better loss" : ""))
    } else {
      parts.append("no validation data")
    }
    let kept = s.saveTotalLimit > 0 ? ", keeping the last \(s.saveTotalLimit)" : ""
    parts.append("checkpoint " + (every("save_steps", s.saveSteps).map { "\($0) and at the end" } ?? "at the end") + kept)
    parts.append("log " + (every("logging_steps", s.loggingSteps) ?? "every step"))
    return "schedule: " + parts.joined(separator: "; ")
  }

  /// Runs `body`; an out-of-memory error ends in `estimate`'s one line of advice.
  private static func advised<T>(_ estimate: MemoryEstimate, _ progress: ProgressLine, _ body: () throws -> T) throws -> T {
    do { return try body() } catch {
      progress.finishLine()
      if let explained = estimate.explain(error) { throw explained }
      throw error
    }
  }

  // MARK: - Tasks

  /// The objective's task over `model` (with `lora`, or every weight), and the reward head.
  func makeTask(model: DecoderModel, lora: LoRAModel?, data: TrainData, output: URL,
                progress: ProgressLine, loaded: LoadedModel) throws -> (task: TrainingTask, scoreHead: HFModelWriter.ScoreHead?) {
    let s = settings
    switch s.objective {
    case .grpo:
      return (try makeGRPOTask(model: model, lora: lora, data: data, loaded: loaded, progress: progress), nil)
    case .ppo:
      return (try makePPOTask(model: model, lora: lora, data: data, loaded: loaded, progress: progress), nil)
    case .kto:
      guard let lora else { throw RecipeError("KTO trains an adapter here (its reference is the base): use method lora or qlora") }
      let task: KTOTask
      do { task = try KTOTask(model: model, lora: lora, loss: s.ktoLoss, examples: data.unpaired) } catch let e as TrainingError {
        throw RecipeError(e.description)
      }
      let l = s.ktoLoss
      progress.message("KTO: \(l.lossType.rawValue) loss, beta \(l.beta), desirable_weight \(l.desirableWeight), "
        + "undesirable_weight \(l.undesirableWeight); reference: the model with its adapter disabled"
        + (l.lossType == .kto ? "; KL estimate from each prompt with the previous row's answer" : ""))
      return (task, nil)
    case .sft:
      if let lora {
        return (SFTTask(model: model, trainables: lora.trainableTensors, zero: { try lora.zeroGradients() },
                        setDropoutSeed: { try lora.setDropoutSeed($0) }, setTraining: { lora.training = $0 }), nil)
      }
      return (SFTTask(fullFineTuning: model), nil)
    case .dpo:
      let needsCache = lora == nil || s.precomputeRefLogProbs
      let reference = needsCache ? try referenceLogProbs(model: model, lora: lora, data: data, output: output,
                                                         progress: progress) : nil
      let task: DPOTask
      do {
        if let lora {
          task = try DPOTask(model: model, lora: lora, loss: s.dpoLoss, precomputed: reference)
        } else {
          task = try DPOTask(fullFineTuning: model, reference: reference ?? ReferenceLogProbs(), loss: s.dpoLoss)
        }
      } catch let e as PreferenceLossError {
        throw RecipeError(e.description)
      }
      let lossLine = "DPO: \(s.dpoLossType.rawValue) loss, beta \(s.effectiveBeta)"
      progress.message(lossLine
        + (s.labelSmoothing > 0 ? ", label_smoothing \(s.labelSmoothing)" : "")
        + (s.rpoAlpha.map { ", rpo_alpha \($0)" } ?? "")
        + ", reference: " + (reference == nil ? "the model with its adapter disabled" : "precomputed log-probs"))
      return (task, nil)
    case .orpo:
      let task: DPOTask
      do {
        task = try lora.map { try DPOTask(model: model, lora: $0, loss: s.dpoLoss) }
          ?? DPOTask(fullFineTuning: model, orpo: s.dpoLoss)
      } catch let e as PreferenceLossError {
        throw RecipeError(e.description)
      }
      progress.message("ORPO: beta \(s.effectiveBeta); the chosen answers' NLL (prompt included) − beta·log σ(log odds ratio); "
        + "no reference model")
      return (task, nil)
    case .classification, .mlm:
      throw RecipeError("--objective \(s.objective.rawValue) runs through ClassificationRun")
    case .reward:
      let head = try ScoreHead(hidden: model.weights.shape.hidden, backend: model.backend, seed: UInt64(s.seed))
      let task = lora.map { RewardTask(model: model, lora: $0, head: head, padID: data.padID, margin: s.margin) }
        ?? RewardTask(fullFineTuning: model, head: head, padID: data.padID, margin: s.margin)
      progress.message("reward model: score head [1, \(model.weights.shape.hidden)] on the last token that is not "
        + "pad id \(data.padID)" + (s.margin != 0 ? ", margin \(s.margin)" : ""))
      return (task, HFModelWriter.ScoreHead(weight: head.weight, padTokenID: data.padID))
    }
  }

  /// DPO's reference log-probs over every training and validation sequence: read back from
  /// `reference_logps.json` when resuming, else computed now (the adapter switched off, or
  /// the untouched weights of full fine-tuning) and saved there.
  func referenceLogProbs(model: DecoderModel, lora: LoRAModel?, data: TrainData, output: URL,
                         progress: ProgressLine) throws -> ReferenceLogProbs {
    let url = output.appendingPathComponent(ReferenceLogProbs.fileName)
    if resume, FileManager.default.fileExists(atPath: url.path) {
      let cached = try ReferenceLogProbs.load(url)
      progress.message("reference log-probs: \(cached.values.count) sequences read from \(ReferenceLogProbs.fileName)")
      return cached
    }
    let started = Date()
    lora?.enabled = false
    defer { lora?.enabled = true }
    let values = try ReferenceLogProbs.compute(model: model, examples: data.train + data.validation,
                                               batchSize: 2 * settings.perDeviceTrainBatchSize, padID: data.padID)
    try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
    try values.save(url)
    progress.message(String(format: "reference log-probs: %d sequences in %.1f s, saved to %@", values.values.count,
                            Date().timeIntervalSince(started), ReferenceLogProbs.fileName))
    return values
  }

  /// Seconds between progress lines of one evaluation.
  static let evaluationLineSeconds = 10.0
  /// Progress lines printed by the current evaluation (slots of `evaluationLineSeconds`).
  static let evaluationLinesPrinted = Mutex(0)

  /// Prints a trainer event.
  static func report(_ event: TrainingEvent, _ progress: ProgressLine, objective: TrainObjective = .sft) {
    switch event {
    case .progress(let p):
      progress.update(step: p.step, of: p.totalSteps, loss: p.loss, lr: Double(p.learningRate),
                      tokensPerSecond: p.tokensPerSecond, eta: p.etaSeconds, extra: p.extra)
    case .evaluating(let done, let total, let elapsed):
      // A line every `evaluationLineSeconds` of a long evaluation, so it never looks stuck.
      let slot = Int(elapsed / evaluationLineSeconds)
      guard done < total, slot > evaluationLinesPrinted.withLock({ $0 }) else { return }
      evaluationLinesPrinted.withLock { $0 = slot }
      let eta = elapsed / Double(done) * Double(total - done)
      progress.message(String(format: "evaluating: %d/%d batches, %.0f s, ~%.0f s left", done, total, elapsed, eta))
    case .evaluation(let r):
      evaluationLinesPrinted.withLock { $0 = 0 }
      if objective == .classification {
        // Perplexity means nothing for a label's cross-entropy: loss, accuracy and F1.
        progress.message("eval step \(r.step) | loss \(String(format: "%.4f", r.loss))"
          + TrainingProgress.extraText(r.extra) + (r.isBest ? " (best)" : ""))
      } else {
        progress.message(objective == .ppo ? ProgressLine.ppoEvaluation(r)
          : objective == .grpo ? ProgressLine.grpoEvaluation(r)
          : objective.isPreference ? ProgressLine.preferenceEvaluation(r) : r.line)
      }
    case .checkpointSaved(let url): progress.message("saved \(url.lastPathComponent)")
    case .checkpointSkipped(let url, let reason): progress.message("skipped \(url.lastPathComponent): \(reason)")
    case .resumed(let url, let step): progress.message("resumed from \(url.lastPathComponent) at step \(step)")
    case .earlyStopped(let step, let best):
      progress.message("early stopping at step \(step): no improvement since step \(best)")
    case .stepSkipped(let step, let scale, let newScale):
      progress.message(String(format: "step %d: inf/NaN gradients under fp16, update skipped; loss scale %g → %g",
                              step, scale, newScale))
    }
  }
}

// MARK: - Settings → library configs

extension TrainSettings {
  /// The adapter settings.
  var loraConfig: LoRAConfig {
    LoRAConfig(r: loraR, alpha: Float(loraAlpha), dropout: Float(loraDropout), targetModules: loraTargetModules,
               useRSLoRA: useRslora, useDoRA: useDora, targetParameters: loraTargetParameters)
  }

  /// The training loop's settings.
  var trainingConfig: TrainingConfig {
    var c = TrainingConfig()
    c.learningRate = learningRate
    c.adamBeta1 = Float(adamBeta1); c.adamBeta2 = Float(adamBeta2); c.adamEpsilon = Float(adamEpsilon)
    c.weightDecay = Float(weightDecay); c.maxGradNorm = Float(maxGradNorm)
    c.lrSchedulerType = lrSchedulerType; c.warmupSteps = warmupSteps; c.warmupRatio = warmupRatio
    c.lrSchedulerKwargs = lrSchedulerKwargs
    c.numTrainEpochs = numTrainEpochs; c.maxSteps = maxSteps
    c.perDeviceTrainBatchSize = perDeviceTrainBatchSize; c.gradientAccumulationSteps = gradientAccumulationSteps
    // GRPO's batch counts completions (TRL's): the trainer batches their prompts.
    if objective == .grpo { c.perDeviceTrainBatchSize = max(1, perDeviceTrainBatchSize / max(numGenerations, 1)) }
    c.maxSeqLength = maxSeqLength; c.packing = packing
    c.evalSteps = evalSteps; c.evalOnStart = evalOnStart; c.earlyStoppingPatience = earlyStoppingPatience
    c.saveSteps = saveSteps; c.saveTotalLimit = saveTotalLimit
    c.seed = UInt64(seed); c.loggingSteps = loggingSteps
    c.fp16 = frozenStorage == .f16
    return c
  }

  /// The memory estimate of this run on `shape` with rows of at most `seqLength` tokens
  /// (`fusedAttention` as the model's: the default).
  func memoryEstimate(shape: TransformerShape, seqLength: Int, fusedAttention: Bool = true,
                      headChunkTokens: Int? = nil) -> MemoryEstimate {
    let adapterElements = method == .full ? 0
      : MemoryEstimate.loraElements(shape: shape, rank: loraR, targetModules: Set(loraConfig.resolvedTargetModules),
                                    dora: useDora, expertParameters: Set(loraConfig.resolvedTargetParameters))
    let trained = method == .full ? shape.parameterShapes.reduce(0) { $0 + $1.shape.reduce(1, *) } : adapterElements
    let state: MemoryKind
    switch optimizerState {
    case .device: state = .device
    case .host: state = .hostVisible
    case .auto:
      // Mirrors OptimizerStatePlacement.auto: paged when the state does not fit beside the rest.
      let base = MemoryEstimate(shape: shape, settings: .init(
        microBatchSize: perDeviceTrainBatchSize, seqLength: seqLength, checkpointing: gradientCheckpointing,
        nf4Projections: method == .qlora, nf4DoubleQuant: doubleQuant, fullFineTuning: method == .full, adapterElements: adapterElements,
        fusedAttention: fusedAttention, frozenStorage: frozenStorage, headChunkTokens: headChunkTokens,
        activationType: frozenStorage))
      let fits = memoryBudget.map { base.deviceBytesExcludingOptimizer + AdamW.stateBytes(elements: trained) <= $0 } ?? true
      state = fits ? .device : .hostVisible
    }
    return MemoryEstimate(shape: shape, settings: .init(
      microBatchSize: perDeviceTrainBatchSize, seqLength: seqLength, checkpointing: gradientCheckpointing,
      nf4Projections: method == .qlora, nf4DoubleQuant: doubleQuant, fullFineTuning: method == .full, adapterElements: adapterElements,
      optimizerState: state, fusedAttention: fusedAttention, frozenStorage: frozenStorage,
      headChunkTokens: headChunkTokens, activationType: frozenStorage))
  }
}
