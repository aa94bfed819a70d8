// Optimizer steps as replays of recorded work: one submission and one host wait per step,
// whatever the gradient accumulation, with no descriptor set or pipeline made after warm-up.
import VKFCore
import VKFData

/// A task whose micro-batch splits into a host half (`stage`: check and upload the inputs,
/// set the dropout seed) and an ops-only half (`queueForwardBackward`) that can be recorded
/// once per input shape and replayed.
public protocol StagedTrainingTask: TrainingTask {
  /// Checks `batch` and uploads its inputs (never waiting), padded to `shape`; sets the
  /// dropout seed of the next pass. Returns false when the batch trains nothing (skip it).
  func stage(_ batch: Batch, as shape: StepShape, dropoutSeed: UInt64) throws -> Bool
  /// Called before a step's micro-batches are staged with the normalizer their losses are
  /// divided by (a task weighing other per-micro-batch terms by it keeps it).
  func willStage(lossNormalizer: Float)
  /// Makes room for the largest shape the run will meet before anything is recorded, so
  /// later shapes reuse the same memory.
  func reserve(_ shape: StepShape) throws
  /// Forward and backward of the staged batch, its loss divided by `lossNormalizer` (one
  /// f32, read when the ops run) and added into `lossSum` (one f32). Ops only.
  func queueForwardBackward(lossNormalizer: Tensor, lossSum: Tensor) throws
  /// Task metrics summed on the device over a step's micro-batches (zeroed when the step
  /// begins, read back with the loss), or nil for none.
  var stepMetrics: Tensor? { get }
  /// Takes one step's `stepMetrics` values (for `takeMetrics(training: true)`).
  func absorbStepMetrics(_ values: [Float])
}

extension StagedTrainingTask {
  public func willStage(lossNormalizer: Float) {}
  public var stepMetrics: Tensor? { nil }
  public func absorbStepMetrics(_ values: [Float]) {}
}

/// The (B, T) a micro-batch runs at: T rounded up to a multiple of `StepShape.granularity`
/// (capped at the longest row allowed), so a run meets few shapes and records each once.
/// Right padding (ignored targets) changes no trained token's loss: attention is causal.
/// Where recording saves nothing (the CPU) rows are not padded (granularity 1).
public struct StepShape: Hashable, Sendable, CustomStringConvertible {
  public let batch: Int, tokens: Int
  /// Tokens a row is rounded up to: a run over the shared Alpaca subset meets ≤ 16 shapes
  /// at max_seq_length 1024, and a row wastes < 64 tokens.
  public static let granularity = 64

  public init(batch: Int, tokens: Int) { self.batch = batch; self.tokens = tokens }

  /// The granularity a run on `backend` pads to: `granularity` where replaying a recording
  /// saves work, else 1 (exact shapes: padding would only add arithmetic).
  public static func granularity(for backend: Backend) -> Int {
    backend.recordingSavesWork ? granularity : 1
  }

  /// The shape `batch` runs at when rows may hold up to `maxTokens` tokens.
  public init(for batch: Batch, maxTokens: Int, granularity: Int = Self.granularity) {
    self.init(rows: batch.batchSize, tokens: batch.seqLength, maxTokens: maxTokens, granularity: granularity)
  }

  /// The shape of `rows` rows of `tokens` tokens when rows may hold up to `maxTokens`.
  public init(rows: Int, tokens: Int, maxTokens: Int, granularity: Int = Self.granularity) {
    let g = max(1, granularity)
    let rounded = (tokens + g - 1) / g * g
    self.init(batch: rows, tokens: max(tokens, min(rounded, maxTokens)))
  }

  public var description: String { "\(batch)×\(tokens)" }
}

/// Runs optimizer steps of a `StagedTrainingTask` as replays: a `begin` recording (zero the
/// gradients and the metric slots), one recording per micro-batch shape, an `end` recording
/// (Σgrad², the total S, AdamW) and a `publish` one copying [loss, S] into a host-visible
/// slot of two, alternating. The host stages each micro-batch's inputs between replays —
/// uploads that never wait — and `submit` starts the step without waiting; `finish` reads
/// its slot, waiting only for that step, so the host reads step N while step N+1 runs. A
/// non-finite loss or S skips the update on the device, and every later one until the host
/// stops the run (see `AdamW.sumOfSquares`).
///
/// With `replays` false the same bodies run eagerly: the reference the replayed step is
/// compared with, bit for bit.
public final class ReplayedSteps {
  public let task: StagedTrainingTask
  public let optimizer: AdamW
  /// Longest row (tokens) a micro-batch may be padded to.
  public let maxTokens: Int
  /// Record and replay (true), or run the same ops eagerly (false).
  public let replays: Bool
  /// Tokens a row is padded to a multiple of (`StepShape.granularity(for:)` by default).
  public let shapeGranularity: Int
  private let backend: Backend
  /// 1/N's N for the step (one f32, uploaded before each step).
  private let normalizer: Tensor
  private var begin: Recording?, end: Recording?
  private var micro: [StepShape: Recording] = [:]
  /// Two host-visible [loss, S] slots, alternating between steps, and their copy recordings.
  private let readback: [Tensor]
  private var publish: [Recording?] = [nil, nil]
  /// Steps submitted so far (picks the readback slot).
  private var submitted = 0

  /// Shapes recorded so far (one recording each).
  public var recordedShapes: Set<StepShape> { Set(micro.keys) }

  public init(task: StagedTrainingTask, optimizer: AdamW, maxTokens: Int, replays: Bool = true,
              shapeGranularity: Int? = nil) throws {
    self.task = task
    self.optimizer = optimizer
    self.maxTokens = maxTokens
    self.replays = replays
    backend = task.backend
    self.shapeGranularity = shapeGranularity ?? StepShape.granularity(for: task.backend)
    normalizer = try backend.allocate([1])
    let be = task.backend
    let slotCount = 2 + (task.stepMetrics?.count ?? 0)
    readback = try (0..<2).map { _ in try be.allocate([slotCount], .f32, memory: .hostVisible) }
  }

  /// The outcome of one step, read after its single wait.
  public struct Outcome: Sendable {
    /// The step's mean loss (Σ over micro-batches of their summed loss / normaliser).
    public let loss: Float
    /// Σgrad² over every trained tensor, before clipping (NaN when the loss was not finite).
    public let sumOfSquares: Float
    /// The task's `stepMetrics` after the step (empty when it has none).
    public let taskMetrics: [Float]
  }

  /// A submitted step whose outcome has not been read.
  public struct Pending {
    fileprivate let slot: Int
  }

  /// One optimizer step over `batches` (each with its dropout seed) at learning rate `lr`,
  /// the summed loss divided by `lossNormalizer`. Waits once, at the end.
  public func step(_ batches: [Batch], dropoutSeeds: [UInt64], lossNormalizer: Float, lr: Float,
                   gradScale: Float = 1) throws -> Outcome {
    try finish(try submit(batches, dropoutSeeds: dropoutSeeds, lossNormalizer: lossNormalizer, lr: lr,
                          gradScale: gradScale))
  }

  /// Queues and starts one optimizer step without waiting (see `step`); read it with `finish`.
  /// `gradScale` multiplies the gradients in the update and the clip norm (a loss scale's
  /// inverse).
  public func submit(_ batches: [Batch], dropoutSeeds: [UInt64], lossNormalizer: Float, lr: Float,
                     gradScale: Float = 1) throws -> Pending {
    guard batches.count == dropoutSeeds.count else {
      throw TrainingError.invalidBatch("\(batches.count) micro-batches but \(dropoutSeeds.count) dropout seeds")
    }
    try backend.upload([lossNormalizer], to: normalizer)
    task.willStage(lossNormalizer: lossNormalizer)
    try run(&begin) { [task, optimizer, backend] in
      try task.zeroGradients()
      try optimizer.queueResetMetrics()
      if let m = task.stepMetrics { try backend.fill(m, value: 0) }
    }
    for (b, seed) in zip(batches, dropoutSeeds) {
      let shape = StepShape(for: b, maxTokens: maxTokens, granularity: shapeGranularity)
      guard try task.stage(b, as: shape, dropoutSeed: seed) else { continue }
      try run(&micro[shape]) { [task, normalizer, optimizer] in
        try task.queueForwardBackward(lossNormalizer: normalizer, lossSum: optimizer.lossSum)
      }
    }
    try optimizer.prepareStep(lr: lr, gradScale: gradScale)
    try run(&end) { [optimizer] in
      try optimizer.queueSumOfSquares()
      try optimizer.queueUpdate()
    }
    let slot = submitted % 2
    submitted += 1
    try run(&publish[slot]) { [backend, optimizer, readback, task] in
      try backend.copy(optimizer.lossSum, to: try readback[slot].view(offset: 0, shape: [1]))
      try backend.copy(optimizer.sumOfSquares, to: try readback[slot].view(offset: 1, shape: [1]))
      if let m = task.stepMetrics {
        try backend.copy(m, to: try readback[slot].view(offset: 2, shape: [m.count]))
      }
    }
    try backend.flush()
    return Pending(slot: slot)
  }

  /// The outcome of a submitted step: waits for that step only (a later one may run on).
  public func finish(_ pending: Pending) throws -> Outcome {
    let m = try backend.floats(readback[pending.slot])
    return Outcome(loss: m[0], sumOfSquares: m[1], taskMetrics: Array(m.dropFirst(2)))
  }

  /// Replays `recording`, recording `body` into it first; or runs `body` eagerly.
  private func run(_ recording: inout Recording?, _ body: @escaping () throws -> Void) throws {
    guard replays else { return try body() }
    let r: Recording
    if let recording { r = recording } else {
      r = try backend.record(body)
      recording = r
    }
    try backend.replay([r])
  }
}
