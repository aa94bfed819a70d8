// GRPO's policy update on a batch of rollouts: the policy (and reference) log-probs of each
// completion token through the model, TRL's clipped surrogate on the host, and its gradient
// as per-token weights of the cross-entropy backward.
import Foundation
import VKFCore
import VKFData
import VKFModel
import VKFPEFT

/// Completions ready for the loss, row by row (a prompt's samples consecutive).
public struct GRPORollouts: Sendable {
  /// Each row's prompt ids (unpadded).
  public var prompts: [[Int]]
  /// Each row's completion ids: the kept tokens (`masks[r].length`, the EOS included).
  public var completions: [[Int]]
  /// Each row's TRL completion mask.
  public var masks: [CompletionMask]
  /// Each row's advantage.
  public var advantages: [Double]
  /// Each kept token's log-prob when the rollouts were made (num_iterations > 1); nil: the
  /// current ones (ratio 1, TRL's detached log-probs).
  public var oldLogProbs: [[Double]]?

  public init(prompts: [[Int]], completions: [[Int]], masks: [CompletionMask], advantages: [Double],
              oldLogProbs: [[Double]]? = nil) {
    self.prompts = prompts; self.completions = completions; self.masks = masks; self.advantages = advantages
    self.oldLogProbs = oldLogProbs
  }

  public var rows: Int { prompts.count }

  /// Masked tokens (those with a loss) per row.
  public func lossTokens(_ c: GRPOLossConfig) -> [Int] {
    masks.map { c.maskTruncatedCompletions && $0.truncated ? 0 : $0.length }
  }

  /// ids (B, T) and targets: each row its prompt then its completion, right-padded with
  /// `padID`; the target of the position before completion token j is that token. Also each
  /// kept token's flat position in (B, T).
  func sequences(padID: Int) -> (ids: [Int32], targets: [Int32], tokens: Int, positions: [[Int]]) {
    let t = zip(prompts, completions).map { $0.count + $1.count }.max() ?? 1
    var ids = [Int32](repeating: Int32(padID), count: rows * t)
    var targets = [Int32](repeating: Int32(DecoderModel.ignoreIndex), count: rows * t)
    var positions: [[Int]] = []
    for r in 0..<rows {
      let p = prompts[r], c = completions[r]
      for (i, id) in (p + c).enumerated() { ids[r * t + i] = Int32(id) }
      positions.append(c.indices.map { r * t + p.count + $0 - 1 })
      for (j, id) in c.enumerated() { targets[r * t + p.count + j - 1] = Int32(id) }
    }
    return (ids, targets, t, positions)
  }
}

/// GRPO over a `DecoderModel` with a LoRA adapter (the reference is the adapter switched off)
/// or fully fine-tuned with β = 0 (no reference needed).
public final class GRPOTask {
  public let model: DecoderModel
  public let trainableTensors: [TrainableTensor]
  public let loss: GRPOLossConfig
  /// Switches the adapter (false: the reference); nil without one.
  let setAdapterEnabled: ((Bool) -> Void)?
  private let zero: () throws -> Void
  let dropoutSeedSetter: (UInt64) throws -> Void
  let trainingModeSetter: (Bool) -> Void
  /// The padding id of the training rows.
  public let padID: Int
  /// Where rollouts come from when the task trains through a `Trainer` (nil: `train(on:)` only).
  public var source: GRPORolloutSource?
  /// TRL's `num_iterations` (μ): optimizer updates per generation batch. Above 1, each step
  /// keeps its rollouts' log-probs from before its first update, and its μ updates clip the
  /// ratio to them.
  public var numIterations = 1
  /// The current step's rollouts per micro-batch, the next one's index, the step's loss tokens.
  var pending: [GRPORollouts] = []
  var cursor = 0, stepTokens = 0
  var trainSums = GRPOMetricSums(), evalSums = GRPOMetricSums()

  public init(model: DecoderModel, trainables: [TrainableTensor], zero: @escaping () throws -> Void,
              setAdapterEnabled: ((Bool) -> Void)?, loss: GRPOLossConfig, padID: Int,
              setDropoutSeed: @escaping (UInt64) throws -> Void = { _ in },
              setTraining: @escaping (Bool) -> Void = { _ in }) throws {
    guard loss.beta == 0 || setAdapterEnabled != nil else {
      throw TrainingError.invalidConfig(field: "beta", value: "\(loss.beta)",
        requirement: "0 for full fine-tuning (the KL reference is the base model with the adapter switched off: use LoRA)")
    }
    self.model = model; self.trainableTensors = trainables; self.zero = zero
    self.setAdapterEnabled = setAdapterEnabled; self.loss = loss; self.padID = padID
    dropoutSeedSetter = setDropoutSeed; trainingModeSetter = setTraining
  }

  /// LoRA / QLoRA.
  public convenience init(model: DecoderModel, lora: LoRAModel, loss: GRPOLossConfig, padID: Int) throws {
    try self.init(model: model, trainables: lora.trainableTensors, zero: { try lora.zeroGradients() },
                  setAdapterEnabled: { lora.enabled = $0 }, loss: loss, padID: padID,
                  setDropoutSeed: { try lora.setDropoutSeed($0) }, setTraining: { lora.training = $0 })
  }

  public var backend: Backend { model.backend }
  public func zeroGradients() throws { try zero() }

  /// The log-prob of every kept token under the model as it is now (no gradients).
  func logProbs(ids: [Int32], targets: [Int32], rows: Int, positions: [[Int]]) throws -> [[Double]] {
    try model.setLossTemperature(loss.temperature)
    defer { try? model.setLossTemperature(1) }
    try model.forward(ids: ids, targets: targets, batch: rows, lossNormalizer: 1, logProbsOnly: true)
    let losses = try model.tokenLosses()
    return positions.map { $0.map { -Double(losses[$0]) } }
  }

  /// The reference's log-probs (adapter off, dropout off), or nil when β = 0.
  func referenceLogProbs(ids: [Int32], targets: [Int32], rows: Int, positions: [[Int]]) throws -> [[Double]]? {
    guard loss.beta != 0, let setEnabled = setAdapterEnabled else { return nil }
    setEnabled(false)
    trainingModeSetter(false)
    defer { setEnabled(true); trainingModeSetter(true) }
    return try logProbs(ids: ids, targets: targets, rows: rows, positions: positions)
  }

  /// Forward and backward of the surrogate over `r` (gradients accumulate): `stepTokens`
  /// masked tokens in the whole step (dapo) over `microBatches` micro-batches. Returns this
  /// micro-batch's share of the step loss and its token statistics.
  public func train(on r: GRPORollouts, stepTokens: Int, microBatches: Int, dropoutSeed: UInt64,
                    lossScale: Float = 1) throws -> (loss: Float, step: GRPOMath.Step) {
    let (ids, targets, t, positions) = r.sequences(padID: padID)
    let rows = r.rows
    let ref = try referenceLogProbs(ids: ids, targets: targets, rows: rows, positions: positions)
    try dropoutSeedSetter(dropoutSeed)
    try model.setLossTemperature(loss.temperature)
    defer { try? model.setLossTemperature(1) }
    let lengths = zip(r.prompts, r.completions).map { $0.count + $1.count }
    try model.stage(ids: ids, targets: targets, batch: rows, tokenMask: tokenMask(lengths, tokens: t), auxLossWeight: 0)
    try model.forwardStaged(lossNormalizer: .value(1), computeGradients: true, weightedLater: true)
    let losses = try model.tokenLosses()
    let logp = positions.map { $0.map { -Double(losses[$0]) } }
    // Flat per kept token: log-probs, old, reference, advantage and the loss weight.
    let kept = r.lossTokens(loss)
    let scales = GRPOMath.rowScales(loss, tokens: kept, stepTokens: stepTokens, microBatches: microBatches)
    var flat: (logp: [Double], old: [Double], ref: [Double], a: [Double], scale: [Double]) = ([], [], [], [], [])
    for row in 0..<rows {
      for j in positions[row].indices {
        flat.logp.append(logp[row][j])
        flat.old.append(r.oldLogProbs?[row][j] ?? logp[row][j])
        flat.ref.append(ref?[row][j] ?? 0)
        flat.a.append(r.advantages[row])
        flat.scale.append(j < kept[row] ? scales[row] : 0)
      }
    }
    let s = GRPOMath.surrogate(loss, logp: flat.logp, old: flat.old, ref: ref == nil ? nil : flat.ref,
                               advantage: flat.a, scale: flat.scale)
    // dL/dlogits = Σ (dL/dlogp)·dlogp/dlogits, and the cross-entropy gradient is −dlogp/dlogits.
    var weights = [Float](repeating: 0, count: rows * t), k = 0
    for row in 0..<rows {
      for p in positions[row] { weights[p] = lossScale * Float(-s.gradient[k]); k += 1 }
    }
    try model.backward(tokenWeights: weights)
    return (lossScale * Float(s.loss), s)
  }

  /// A mixture-of-experts model's real-token mask (the prompt and completion, not padding).
  private func tokenMask(_ lengths: [Int], tokens t: Int) -> [Float]? {
    guard model.shape.moe != nil else { return nil }
    return (0..<(lengths.count * t)).map { i in i % t < lengths[i / t] ? 1 : 0 }
  }
}
