// The SFT training loop: micro-batches → token-weighted accumulation → clipped AdamW step →
// schedule, logging, evaluation, early stopping and checkpoints.
import Foundation
import VKFCore
import VKFData

/// Runs a `TrainingTask` over tokenized data.
///
/// Use: `let t = try Trainer(task:config:train:validation:outputDirectory:)`, set `onEvent`
/// and `saveBest`, optionally `try t.resume(from: dir)`, then `try t.train()`.
/// Each optimizer step: zero gradients, run `gradientAccumulationSteps` micro-batches with
/// `lossNormalizer` = the step's total trained targets (so accumulation equals one big batch,
/// token-weighted as transformers ≥ 4.46 does), check loss and gradient norm are finite, then
/// one AdamW update at the schedule's LR for the completed step count.
public final class Trainer {
  /// What is trained.
  public let task: TrainingTask
  /// The settings.
  public let config: TrainingConfig
  /// The optimizer (its state placement is fixed at creation).
  public let optimizer: AdamW
  /// The LR schedule over `totalSteps`.
  public let schedule: LRSchedule
  /// Optimizer steps of the whole run.
  public let totalSteps: Int
  /// `eval_steps`, `save_steps` and `logging_steps` in optimizer steps for this run (a
  /// fraction of the run resolved against `totalSteps`; 0 = not by steps).
  public let evalInterval: Int, saveInterval: Int, logInterval: Int
  /// Where metrics.jsonl, loss-curve.svg and checkpoint-<step>/ go (nil: nowhere).
  public let outputDirectory: URL?
  /// Completed optimizer steps.
  public internal(set) var step = 0
  /// Called for every progress line, evaluation and checkpoint.
  public var onEvent: ((TrainingEvent) -> Void)?
  /// Called at each new best evaluation, with the task holding the best trainables: the CLI
  /// writes the adapter (or model) here. A throw stops training.
  public var saveBest: ((EvaluationResult, TrainingTask) throws -> Void)?
  /// Test seam: called after each file of a checkpoint is written, before the directory is
  /// renamed into place (a throw aborts the save like a crash would, minus the leftovers).
  public var checkpointFileWritten: ((String) throws -> Void)?
  /// Asked before each optimizer step; true stops the run with `TrainingError.interrupted`
  /// (the CLI's Ctrl-C / SIGTERM).
  public var shouldStop: (() -> Bool)?

  var plan: DataPlan
  let evaluationBatches: [Batch]
  /// Position in the data.
  var cursor = DataCursor()
  /// Dropout-seed generator state (SplitMix64 counter).
  var rngState: UInt64
  var bestEvaluation: EvaluationResult?
  var evaluationsWithoutImprovement = 0
  /// Host copy of the best trainables (only with early stopping), by name.
  var bestTrainables: [String: [Float]]?
  var lastCheckpoint: URL?
  var log: TrainingLog?
  /// Steps of a `StagedTrainingTask` run as replays of recorded work (`ReplayedSteps`): one
  /// submission and one wait per optimizer step. False runs the same ops eagerly (tests).
  public var replaysSteps = true
  /// Tokens the staged rows are padded to a multiple of; nil: `StepShape.granularity(for:)`
  /// of the task's backend (tests pad on the CPU too).
  public var stepShapeGranularity: Int?
  /// The step engine of a staged task, made at the first step.
  public private(set) var replayedSteps: ReplayedSteps?
  /// fp16's dynamic loss scale (`config.fp16`), else nil.
  public internal(set) var gradScaler: GradScaler?
  /// Steps (1-based) whose update was skipped for inf/NaN gradients under fp16.
  public private(set) var skippedSteps: [Int] = []
  private var epochCache: (epoch: Int, batches: [Batch])?

  /// A trainer; validates the config and data, builds the optimizer and schedule.
  /// - Parameters:
  ///   - optimizerState: where AdamW's moments live; `otherDeviceBytes` feeds `.auto`.
  ///   - padID: token used for padding (its targets are ignored, so any valid id works).
  ///   - windowElements: paged-state device window (see `AdamW`).
  public init(task: TrainingTask, config: TrainingConfig, train: [TokenizedExample],
              validation: [TokenizedExample] = [], outputDirectory: URL? = nil,
              optimizerState: OptimizerStatePlacement = .device, otherDeviceBytes: Int = 0, padID: Int = 0,
              windowElements: Int = AdamW.defaultWindowElements) throws {
    try config.validate()
    if config.saveSteps > 0, outputDirectory == nil {
      throw TrainingError.invalidConfig(field: "save_steps", value: StepInterval.formatted(config.saveSteps),
                                        requirement: "checkpoints need an output directory")
    }
    self.task = task
    self.config = config
    self.outputDirectory = outputDirectory
    plan = try DataPlan(examples: train, config: config, padID: padID, groupSize: task.exampleGroupSize)
    try DataPlan.checkLengths(validation, "validation")
    guard validation.count % task.exampleGroupSize == 0 else {
      throw TrainingError.invalidBatch("\(validation.count) validation examples do not form groups of \(task.exampleGroupSize)")
    }
    evaluationBatches = DataPlan.evaluationBatches(validation, config: config, padID: padID,
                                                   groupSize: task.exampleGroupSize)
    totalSteps = plan.totalSteps()
    schedule = try config.schedule(totalSteps: totalSteps)
    evalInterval = StepInterval.steps(config.evalSteps, totalSteps: totalSteps)
    saveInterval = StepInterval.steps(config.saveSteps, totalSteps: totalSteps)
    logInterval = StepInterval.steps(config.loggingSteps, totalSteps: totalSteps)
    optimizer = try AdamW(parameters: task.trainableTensors, config: config.adamW, placement: optimizerState,
                          otherDeviceBytes: otherDeviceBytes, windowElements: windowElements, backend: task.backend)
    rngState = config.seed
    gradScaler = config.fp16 ? GradScaler() : nil
    if let outputDirectory {
      try FileManager.default.createDirectory(at: outputDirectory, withIntermediateDirectories: true)
      log = TrainingLog(directory: outputDirectory)
    }
  }

  // MARK: - Loop

  /// Trains from the current step to `totalSteps` (or early stop). Throws
  /// `TrainingError.nonFinite` naming the step when the loss or gradient norm is NaN/inf;
  /// the parameters then hold the previous step's values and the last checkpoint is kept.
  @discardableResult
  public func train() throws -> TrainingSummary {
    let started = Date()
    var tokens = 0, windowLoss = 0.0, windowSteps = 0, lastLoss = 0.0
    var stoppedEarly = false
    let startStep = step
    // Seconds spent evaluating and checkpointing: not training, so not in tok/s or the ETA.
    var pausedSeconds = 0.0
    func paused<T>(_ body: () throws -> T) rethrows -> T {
      let t0 = Date()
      defer { pausedSeconds += Date().timeIntervalSince(t0) }
      return try body()
    }
    if step == 0, config.evalOnStart, !evaluationBatches.isEmpty {
      _ = try paused { try evaluateAndTrack() }
    }
    /// Books a finished step: counts it, logs, evaluates and checkpoints on schedule.
    /// Returns true when early stopping ends the run.
    /// `loss` nil: a step fp16's loss scaler skipped (no loss or norm to log).
    func complete(loss: Float?, norm: Float, lr: Float, stepTokens: Int, epoch: Double) throws -> Bool {
      tokens += stepTokens
      step += 1
      if let loss { lastLoss = Double(loss); windowLoss += Double(loss); windowSteps += 1 }
      if (step % logInterval == 0 || step == totalSteps) && windowSteps > 0 {
        let elapsed = Date().timeIntervalSince(started) - pausedSeconds
        let done = Double(step - startStep)
        let p = TrainingProgress(step: step, totalSteps: totalSteps, epoch: epoch, loss: windowLoss / Double(windowSteps),
                                 learningRate: lr, gradNorm: norm, tokensPerSecond: elapsed > 0 ? Double(tokens) / elapsed : 0,
                                 elapsedSeconds: elapsed, etaSeconds: elapsed / done * Double(totalSteps - step),
                                 extra: task.takeMetrics(training: true))
        windowLoss = 0; windowSteps = 0
        try log?.append(p)
        onEvent?(.progress(p))
      }
      var stop = false
      if evalInterval > 0, step % evalInterval == 0, !evaluationBatches.isEmpty {
        if try paused({ try evaluateAndTrack() }) { stop = true }
      }
      if saveInterval > 0, step % saveInterval == 0 { _ = try paused { try saveCheckpoint() } }
      return stop
    }
    /// fp16: the loss is multiplied by the scale (through the normalizer) and the gradients
    /// divided by it in the update — powers of two, so with f32 gradients no bit changes.
    func lossScale() -> Float { Float(gradScaler?.scale ?? 1) }
    /// A step with inf/NaN loss or gradients under fp16: its update was skipped (on the
    /// device when `queued`, else never queued); the scale backs off and the run goes on
    /// (GradScaler's semantics).
    func skip(lr: Float, stepTokens: Int, epoch: Double, queued: Bool) throws -> Bool {
      if queued { try optimizer.discardSkippedStep() }
      let before = gradScaler?.scale ?? 1
      gradScaler?.update(foundInf: true)
      skippedSteps.append(step + 1)
      onEvent?(.stepSkipped(step: step + 1, scale: before, newScale: gradScaler?.scale ?? 1))
      return try complete(loss: nil, norm: .nan, lr: lr, stepTokens: stepTokens, epoch: epoch)
    }
    /// A replayed step submitted but not yet read: read while the next one runs.
    struct InFlight { let pending: ReplayedSteps.Pending, lr: Float, tokens: Int, epoch: Double, scale: Float }
    /// Reads a replayed step; a non-finite loss or S stops the run naming it (its update and
    /// any submitted after it were skipped on the device) — under fp16 the step is skipped.
    func finish(_ f: InFlight, _ engine: ReplayedSteps) throws -> Bool {
      let o = try engine.finish(f.pending)
      engine.task.absorbStepMetrics(o.taskMetrics)
      let loss = o.loss / f.scale, norm = o.sumOfSquares.squareRoot() / f.scale
      guard loss.isFinite, norm.isFinite else {
        if gradScaler != nil { return try skip(lr: f.lr, stepTokens: f.tokens, epoch: f.epoch, queued: true) }
        optimizer.rewind(to: step)
        throw loss.isFinite ? nonFinite("the gradient norm", norm) : nonFinite("the training loss", loss)
      }
      gradScaler?.update(foundInf: false)
      return try complete(loss: loss, norm: norm, lr: f.lr, stepTokens: f.tokens, epoch: f.epoch)
    }
    /// Steps whose host work (evaluation, checkpoint, the end) must see exactly their
    /// parameters: read at once, before the next step is submitted. Under fp16 every step:
    /// the next one's scale (and whether the skipped one's state is cleared) depends on it.
    func readAtOnce(_ n: Int) -> Bool {
      gradScaler != nil || n == totalSteps || (evalInterval > 0 && n % evalInterval == 0 && !evaluationBatches.isEmpty)
        || (saveInterval > 0 && n % saveInterval == 0)
    }
    var inFlight: InFlight?
    while step + (inFlight == nil ? 0 : 1) < totalSteps {
      if shouldStop?() == true {
        // The step in flight is sound: book it, then stop between steps.
        if let f = inFlight, let engine = replayedSteps {
          inFlight = nil
          _ = try finish(f, engine)
        }
        throw TrainingError.interrupted(step: step, lastCheckpoint: lastCheckpoint?.path)
      }
      let index = step + (inFlight == nil ? 0 : 1)  // completed steps before this one
      let micro = nextStepBatches()
      try task.prepareStep(micro, completedSteps: index)
      let normalizer = task.lossNormalizer(for: micro)
      let lr = schedule.learningRate(step: index)
      let stepTokens = micro.reduce(0) { $0 + $1.realTokens }
      let epoch = epochProgress
      let scale = lossScale()
      if let engine = try stepEngine() {
        let seeds = micro.map { _ in nextDropoutSeed() }
        let pending = try engine.submit(micro, dropoutSeeds: seeds, lossNormalizer: normalizer / scale, lr: lr,
                                        gradScale: 1 / scale)
        // The previous step is read while this one runs (it never needs host work: see
        // readAtOnce), then this one at once if it does.
        if let previous = inFlight {
          inFlight = nil
          if try finish(previous, engine) { stoppedEarly = true; break }
        }
        let current = InFlight(pending: pending, lr: lr, tokens: stepTokens, epoch: epoch, scale: scale)
        if readAtOnce(index + 1) {
          if try finish(current, engine) { stoppedEarly = true; break }
        } else {
          inFlight = current
        }
      } else if let multi = task as? MultiUpdateTrainingTask, let updates = multi.updatesPerStep {
        let done = try multiUpdateStep(multi, updates: updates, lr: lr, scale: scale)
        if done.updates == 0, gradScaler != nil {
          if try complete(loss: nil, norm: .nan, lr: lr, stepTokens: stepTokens, epoch: epoch) { stoppedEarly = true; break }
          continue
        }
        if try complete(loss: done.loss, norm: done.norm, lr: lr, stepTokens: stepTokens, epoch: epoch) {
          stoppedEarly = true; break
        }
      } else {
        try task.zeroGradients()
        var sum: Float = 0
        for b in micro {
          sum += try task.forwardBackward(b, lossNormalizer: normalizer / scale, dropoutSeed: nextDropoutSeed())
        }
        sum /= scale
        let norm = sum.isFinite ? try optimizer.gradientNorm(gradScale: 1 / scale) : .nan
        if !(sum.isFinite && norm.isFinite), gradScaler != nil {
          if try skip(lr: lr, stepTokens: stepTokens, epoch: epoch, queued: false) { stoppedEarly = true; break }
          continue
        }
        guard sum.isFinite else { throw nonFinite("the training loss", sum) }
        guard norm.isFinite else { throw nonFinite("the gradient norm", norm) }
        try optimizer.update(lr: lr, gradScale: 1 / scale)
        gradScaler?.update(foundInf: false)
        if try complete(loss: sum, norm: norm, lr: lr, stepTokens: stepTokens, epoch: epoch) { stoppedEarly = true; break }
      }
    }
    if let f = inFlight, let engine = replayedSteps, try finish(f, engine) { stoppedEarly = true }
    // A final evaluation unless the last step just had one.
    if !evaluationBatches.isEmpty, !stoppedEarly, evalInterval == 0 || step % evalInterval != 0 {
      _ = try evaluateAndTrack()
    }
    if stoppedEarly, let best = bestTrainables { try restore(best) }
    try log?.writeCurve()
    return TrainingSummary(steps: step, finalLoss: lastLoss, bestEvaluation: bestEvaluation, stoppedEarly: stoppedEarly)
  }

  /// The optimizer updates of one step of a `MultiUpdateTrainingTask`, all at `lr`: each
  /// zeroes the gradients, runs the task's micro-batches, checks the loss and norm, clips and
  /// updates. Under fp16 an update with inf/NaN is skipped and the scale backs off. Returns
  /// the mean loss and the last norm of the updates made.
  func multiUpdateStep(_ task: MultiUpdateTrainingTask, updates: Int, lr: Float, scale: Float) throws
    -> (loss: Float, norm: Float, updates: Int) {
    var sum: Float = 0, norm: Float = 0, made = 0
    var scale = scale
    for u in 0..<updates {
      try task.zeroGradients()
      let loss = try task.forwardBackward(update: u, lossScale: scale, dropoutSeed: { self.nextDropoutSeed() }) / scale
      let n = loss.isFinite ? try optimizer.gradientNorm(gradScale: 1 / scale) : .nan
      if !(loss.isFinite && n.isFinite), gradScaler != nil {
        gradScaler?.update(foundInf: true)
        scale = Float(gradScaler?.scale ?? 1)
        continue
      }
      guard loss.isFinite else { throw nonFinite("the training loss", loss) }
      guard n.isFinite else { throw nonFinite("the gradient norm", n) }
      try optimizer.update(lr: lr, gradScale: 1 / scale)
      gradScaler?.update(foundInf: false)
      sum += loss; norm = n; made += 1
    }
    return (made > 0 ? sum / Float(made) : .nan, norm, made)
  }

  /// The replayed-step engine when the task is staged (made once, with room reserved for
  /// the largest micro-batch the run can meet), else nil.
  func stepEngine() throws -> ReplayedSteps? {
    if let replayedSteps { return replayedSteps }
    guard let staged = task as? StagedTrainingTask else { return nil }
    let engine = try ReplayedSteps(task: staged, optimizer: optimizer, maxTokens: config.maxSeqLength,
                                   replays: replaysSteps, shapeGranularity: stepShapeGranularity)
    try staged.reserve(StepShape(rows: config.perDeviceTrainBatchSize * task.exampleGroupSize,
                                 tokens: plan.longestRow, maxTokens: config.maxSeqLength,
                                 granularity: engine.shapeGranularity))
    // Evaluation batches run unpadded through the same arenas: room for the largest too, so
    // an evaluation never grows the allocation the recordings hold.
    if let rows = evaluationBatches.map(\.batchSize).max(), let tokens = evaluationBatches.map(\.seqLength).max() {
      try staged.reserve(StepShape(batch: rows, tokens: tokens))
    }
    replayedSteps = engine
    return engine
  }

  /// The next optimizer step's micro-batches: up to `gradientAccumulationSteps`, fewer at the
  /// end of an epoch (the next step starts the next epoch, as transformers does).
  func nextStepBatches() -> [Batch] {
    var out: [Batch] = []
    while out.count < config.gradientAccumulationSteps {
      let n = plan.microBatchCount(epoch: cursor.epoch)
      if cursor.microBatch >= n {
        if !out.isEmpty { break }
        cursor = DataCursor(epoch: cursor.epoch + 1, microBatch: 0)
        continue
      }
      if epochCache?.epoch != cursor.epoch { epochCache = (cursor.epoch, plan.microBatches(epoch: cursor.epoch)) }
      out.append(epochCache?.batches[cursor.microBatch] ?? plan.microBatches(epoch: cursor.epoch)[cursor.microBatch])
      cursor.microBatch += 1
    }
    return out
  }

  /// Fractional epoch of the cursor.
  var epochProgress: Double {
    let n = plan.microBatchCount(epoch: cursor.epoch)
    return Double(cursor.epoch) + (n > 0 ? Double(cursor.microBatch) / Double(n) : 0)
  }

  /// The dropout seed of the next micro-batch: SplitMix64 output for a counter state.
  func nextDropoutSeed() -> UInt64 {
    var g = SplitMix64(seed: rngState)
    rngState &+= 1
    return g.next()
  }

  private func nonFinite(_ what: String, _ value: Float) -> TrainingError {
    .nonFinite(step: step + 1, what: what, value: value, lastCheckpoint: lastCheckpoint?.path)
  }

  // MARK: - Evaluation

  /// Mean loss and perplexity over the validation set (nil without one).
  public func evaluate() throws -> EvaluationResult? {
    guard !evaluationBatches.isEmpty else { return nil }
    var sum = 0.0, count = 0
    let started = Date()
    for (i, b) in evaluationBatches.enumerated() {
      let r = try task.evaluate(b)
      sum += r.lossSum; count += r.tokens
      onEvent?(.evaluating(batch: i + 1, of: evaluationBatches.count, elapsedSeconds: Date().timeIntervalSince(started)))
    }
    let extra = task.takeMetrics(training: false)
    guard count > 0 else { return nil }
    let loss = sum / Double(count)
    return EvaluationResult(step: step, loss: loss, perplexity: exp(loss), tokens: count,
                            isBest: bestEvaluation.map { loss < $0.loss } ?? true, extra: extra)
  }

  /// Evaluates, logs, tracks the best (calling `saveBest`); true when patience ran out.
  private func evaluateAndTrack() throws -> Bool {
    guard let r = try evaluate() else { return false }
    try log?.append(r)
    onEvent?(.evaluation(r))
    if r.isBest {
      bestEvaluation = r
      evaluationsWithoutImprovement = 0
      if config.earlyStoppingPatience > 0 { bestTrainables = try snapshot() }
      try saveBest?(r, task)
    } else {
      evaluationsWithoutImprovement += 1
    }
    try log?.writeCurve()
    if config.earlyStoppingPatience > 0, evaluationsWithoutImprovement >= config.earlyStoppingPatience {
      onEvent?(.earlyStopped(step: step, bestStep: bestEvaluation?.step ?? step))
      return true
    }
    return false
  }

  /// The trainables' current values by name (waits for the backend).
  func snapshot() throws -> [String: [Float]] {
    var out: [String: [Float]] = [:]
    for t in task.trainableTensors { out[t.name] = try task.backend.floats(t.value) }
    return out
  }

  /// Uploads saved values into the trainables (every name must be present with its size).
  func restore(_ values: [String: [Float]]) throws {
    for t in task.trainableTensors {
      guard let v = values[t.name], v.count == t.count else {
        throw TrainingError.checkpoint(path: "", detail: "trainable \(t.name) is missing or has the wrong size")
      }
      try task.backend.upload(v, to: t.value)
    }
  }
}
