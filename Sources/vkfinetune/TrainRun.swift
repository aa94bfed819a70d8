import Foundation
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
    let s = settings
    guard let modelArg = s.model, let dataPath = s.data, let outputPath = s.outputDir else {
      throw RecipeError("model, data and output_dir are required")  // validate() already said which
    }
    let output = URL(fileURLWithPath: outputPath).standardizedFileURL
    let progress = ProgressLine()

    // Model and data first: the cheap failures (bad file, bad record) come before any compute.
    let loaded = try ModelLoader.load(modelArg)
    let data = try TrainData.load(settings: s, model: loaded, trainFile: dataPath)
    let backend = try backendOptions.makeBackend()
    progress.message("backend: \(backend.name)")
    progress.message("model: \(loaded.location.url.path) (\(loaded.shape.layers) layers, hidden \(loaded.shape.hidden))")
    progress.message(data.summary)

    // Weights: frozen for adapters, every parameter trainable for full fine-tuning.
    let weights = try LlamaWeights(from: loaded.weights, shape: loaded.shape, backend: backend,
                                   trainable: s.method == .full ? .all : .none)
    if s.method == .qlora { try Quantization.quantize(weights, doubleQuant: s.doubleQuant, log: { progress.message($0) }) }
    let lora = s.method == .full ? nil : try LoRAModel(weights: weights, config: s.loraConfig, seed: UInt64(s.seed))
    let model = try LlamaModel(weights: weights, checkpointing: s.gradientCheckpointing)
    let task: SFTTask
    if let lora {
      task = SFTTask(model: model, trainables: lora.trainableTensors, zero: { try lora.zeroGradients() },
                     setDropoutSeed: { lora.setDropoutSeed($0) }, setTraining: { lora.training = $0 })
      let n = lora.trainableTensors.reduce(0) { $0 + $1.count }
      progress.message("LoRA: r \(s.loraR), alpha \(s.loraAlpha), \(lora.adapters.count) adapters on "
        + "\(s.loraConfig.resolvedTargetModules.joined(separator: ",")), \(n) trainable parameters")
    } else {
      task = SFTTask(fullFineTuning: model)
      progress.message("full fine-tuning: \(task.trainableTensors.reduce(0) { $0 + $1.count }) trainable parameters")
    }

    // Memory: print the estimate, refuse a run over the budget with advice.
    let estimate = s.memoryEstimate(shape: loaded.shape, seqLength: data.longestRow)
    progress.message("estimated memory:\n" + estimate.table)
    if let budget = s.memoryBudget { try estimate.check(budget: budget) }
    let placement: OptimizerStatePlacement
    switch s.optimizerState {
    case .device: placement = .device
    case .host: placement = .host
    case .auto: placement = s.memoryBudget.map { .auto(budgetBytes: $0) } ?? .device
    }

    if overwrite { try Self.emptyDirectory(output) }
    let trainer = try Trainer(task: task, config: s.trainingConfig, train: data.train, validation: data.validation,
                              outputDirectory: output, optimizerState: placement,
                              otherDeviceBytes: estimate.deviceBytesExcludingOptimizer, padID: data.padID)
    trainer.onEvent = { event in Self.report(event, progress) }
    if !data.validation.isEmpty {
      // Best adapter (or model) so far, beside the final one.
      trainer.saveBest = { _, _ in
        try OutputWriter.write(lora: lora, weights: weights, model: loaded, settings: s,
                               into: output.appendingPathComponent("best"))
      }
    }
    if resume {
      let from = try trainer.resume(from: output)
      progress.message("resumed from \(from.lastPathComponent) at step \(trainer.step)/\(trainer.totalSteps)")
    }
    progress.message("training: \(trainer.totalSteps) optimizer step\(trainer.totalSteps == 1 ? "" : "s"), \(s.perDeviceTrainBatchSize) × "
      + "\(s.gradientAccumulationSteps) rows per step, lr \(s.lrSchedulerType) \(ProgressLine.scientific(s.learningRate))")

    let summary: TrainingSummary
    do { summary = try trainer.train() } catch {
      progress.finishLine()
      if let explained = estimate.explain(error) { throw explained }
      throw error
    }
    progress.finishLine()
    // A final checkpoint, so `--resume` can continue this run (e.g. with a larger max_steps).
    if CheckpointLayout.checkpoints(in: output).first?.step != trainer.step { try trainer.saveCheckpoint() }
    try OutputWriter.write(lora: lora, weights: weights, model: loaded, settings: s, into: output)
    var line = String(format: "done: %d steps, final loss %.4f", summary.steps, summary.finalLoss)
    if let best = summary.bestEvaluation { line += String(format: ", best eval loss %.4f at step %d", best.loss, best.step) }
    if summary.stoppedEarly { line += " (stopped early; the best weights were written)" }
    progress.message(line)
    progress.message("wrote \(s.method == .full ? "model" : "adapter") to \(output.path)")
  }

  /// Prints a trainer event.
  static func report(_ event: TrainingEvent, _ progress: ProgressLine) {
    switch event {
    case .progress(let p):
      progress.update(step: p.step, of: p.totalSteps, loss: p.loss, lr: Double(p.learningRate),
                      tokensPerSecond: p.tokensPerSecond, eta: p.etaSeconds)
    case .evaluation(let r): progress.message(r.line)
    case .checkpointSaved(let url): progress.message("saved \(url.lastPathComponent)")
    case .checkpointSkipped(let url, let reason): progress.message("skipped \(url.lastPathComponent): \(reason)")
    case .resumed(let url, let step): progress.message("resumed from \(url.lastPathComponent) at step \(step)")
    case .earlyStopped(let step, let best):
      progress.message("early stopping at step \(step): no improvement since step \(best)")
    }
  }

  /// Removes everything inside `dir` (for --overwrite), keeping the directory.
  static func emptyDirectory(_ dir: URL) throws {
    let fm = FileManager.default
    for name in (try? fm.contentsOfDirectory(atPath: dir.path)) ?? [] {
      do { try fm.removeItem(at: dir.appendingPathComponent(name)) } catch {
        throw RecipeError("--overwrite: cannot remove \(dir.appendingPathComponent(name).path) "
          + "(\(RecipeFile.reason(error)))")
      }
    }
  }
}

// MARK: - Settings → library configs

extension TrainSettings {
  /// The adapter settings.
  var loraConfig: LoRAConfig {
    LoRAConfig(r: loraR, alpha: Float(loraAlpha), dropout: Float(loraDropout), targetModules: loraTargetModules,
               useRSLoRA: useRslora, useDoRA: useDora)
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
    c.maxSeqLength = maxSeqLength; c.packing = packing
    c.evalSteps = evalSteps; c.earlyStoppingPatience = earlyStoppingPatience
    c.saveSteps = saveSteps; c.saveTotalLimit = saveTotalLimit
    c.seed = UInt64(seed); c.loggingSteps = loggingSteps
    return c
  }

  /// The memory estimate of this run on `shape` with rows of at most `seqLength` tokens.
  func memoryEstimate(shape: TransformerShape, seqLength: Int) -> MemoryEstimate {
    let adapterElements = method == .full ? 0
      : MemoryEstimate.loraElements(shape: shape, rank: loraR, targetModules: Set(loraConfig.resolvedTargetModules),
                                    dora: useDora)
    let trained = method == .full ? shape.parameterShapes.reduce(0) { $0 + $1.shape.reduce(1, *) } : adapterElements
    let state: MemoryKind
    switch optimizerState {
    case .device: state = .device
    case .host: state = .hostVisible
    case .auto:
      // Mirrors OptimizerStatePlacement.auto: paged when the state does not fit beside the rest.
      let base = MemoryEstimate(shape: shape, settings: .init(
        microBatchSize: perDeviceTrainBatchSize, seqLength: seqLength, checkpointing: gradientCheckpointing,
        nf4Projections: method == .qlora, fullFineTuning: method == .full, adapterElements: adapterElements))
      let fits = memoryBudget.map { base.deviceBytesExcludingOptimizer + AdamW.stateBytes(elements: trained) <= $0 } ?? true
      state = fits ? .device : .hostVisible
    }
    return MemoryEstimate(shape: shape, settings: .init(
      microBatchSize: perDeviceTrainBatchSize, seqLength: seqLength, checkpointing: gradientCheckpointing,
      nf4Projections: method == .qlora, fullFineTuning: method == .full, adapterElements: adapterElements,
      optimizerState: state))
  }
}
