// KTO (TRL KTOTrainer 1.16): unpaired desirable / undesirable answers, each against a
// reference point — the batch's KL estimate from mismatched prompt/answer rows — with the
// gradient as reweighted token gradients (one policy pass with gradients per micro-batch).
import Foundation
import VKFCore
import VKFData
import VKFModel
import VKFPEFT

/// TRL's KTO `loss_type`.
public enum KTOLossType: String, CaseIterable, Codable, Sendable {
  /// 1 − σ(β(r − z)) for desirable, 1 − σ(β(z − r)) for undesirable answers, z the KL estimate.
  case kto
  /// APO-zero unpaired: 1 − σ(βr) and σ(βr) (no KL rows).
  case apoZeroUnpaired = "apo_zero_unpaired"
}

/// KTO's loss settings (TRL KTOConfig names).
public struct KTOLossConfig: Equatable, Sendable {
  public var lossType: KTOLossType
  public var beta: Double
  public var desirableWeight: Double
  public var undesirableWeight: Double
  public init(lossType: KTOLossType = .kto, beta: Double = 0.1, desirableWeight: Double = 1, undesirableWeight: Double = 1) {
    self.lossType = lossType; self.beta = beta; self.desirableWeight = desirableWeight
    self.undesirableWeight = undesirableWeight
  }
}

/// The loss of one micro-batch: L = (w_d·Σ_desirable ℓ + w_u·Σ_undesirable ℓ) / N over its N
/// rows (TRL's nanmean of the weighted losses), with r = policy − reference summed answer
/// log-probs and z the KL estimate (0 for apo_zero_unpaired). Returns L and dL/dπ per row.
public enum KTOMath {
  public static func loss(_ c: KTOLossConfig, policy: [Double], reference: [Double], desirable: [Bool], kl z: Double)
    -> (loss: Double, gradient: [Double]) {
    let n = Double(max(policy.count, 1)), b = c.beta
    var total = 0.0, grad = [Double](repeating: 0, count: policy.count)
    for i in policy.indices {
      let r = policy[i] - reference[i], w = desirable[i] ? c.desirableWeight : c.undesirableWeight
      // ℓ = 1 − σ(x) with x = β(r − z) (desirable) or β(z − r) (undesirable); apo: z = 0 and an
      // undesirable answer's ℓ = σ(βr) = 1 − σ(−βr), the same form.
      let zz = c.lossType == .kto ? z : 0
      let x = desirable[i] ? b * (r - zz) : b * (zz - r)
      let s = 1 / (1 + exp(-x))
      total += w * (1 - s)
      // dℓ/dr = −σ(x)(1 − σ(x))·dx/dr, dx/dr = ±β.
      grad[i] = w * -s * (1 - s) * (desirable[i] ? b : -b) / n
    }
    return (total / n, grad)
  }
}

/// KTO on a `DecoderModel` with a LoRA adapter (the reference is the adapter switched off).
/// Examples are unpaired answers; their labels come from a table keyed by the sequence.
public final class KTOTask: TrainingTask {
  public let model: DecoderModel
  public let trainableTensors: [TrainableTensor]
  public let loss: KTOLossConfig
  private let lora: LoRAModel
  /// `ReferenceLogProbs.key` of an example → desirable.
  private let labels: [String: Bool]
  private var trainSums: [String: Double] = [:], trainCounts: [String: Int] = [:]
  private var evalSums: [String: Double] = [:], evalCounts: [String: Int] = [:]

  /// `examples`: every training and evaluation example with its label (an identical
  /// sequence with both labels is refused).
  public init(model: DecoderModel, lora: LoRAModel, loss: KTOLossConfig, examples: [UnpairedExample]) throws {
    guard loss.beta > 0, loss.desirableWeight > 0, loss.undesirableWeight > 0 else {
      throw TrainingError.invalidConfig(field: "beta / desirable_weight / undesirable_weight",
                                        value: "\(loss.beta) / \(loss.desirableWeight) / \(loss.undesirableWeight)",
                                        requirement: "all > 0")
    }
    var table: [String: Bool] = [:]
    for e in examples {
      let key = ReferenceLogProbs.key(e.example)
      if let old = table[key], old != e.desirable {
        throw TrainingError.invalidBatch("the same prompt and answer appear as both desirable and undesirable")
      }
      table[key] = e.desirable
    }
    self.model = model; self.lora = lora; self.loss = loss; self.labels = table
    trainableTensors = lora.trainableTensors
  }

  public var backend: Backend { model.backend }
  public func zeroGradients() throws { try lora.zeroGradients() }
  /// TRL averages each micro-batch's loss, and the step averages its micro-batches.
  public func lossNormalizer(for batches: [Batch]) -> Float { Float(max(batches.count, 1)) }

  public func takeMetrics(training: Bool) -> [String: Double] {
    defer { if training { trainSums = [:]; trainCounts = [:] } else { evalSums = [:]; evalCounts = [:] } }
    let (s, c) = training ? (trainSums, trainCounts) : (evalSums, evalCounts)
    var m = Dictionary(uniqueKeysWithValues: s.map { ($0.key, $0.value / Double(max(c[$0.key] ?? 1, 1))) })
    if let ch = m["rewards/chosen"], let rj = m["rewards/rejected"] { m["rewards/margins"] = ch - rj }
    return m
  }

  /// The batch's rows: labels, prompt lengths (from the first trained target) and lengths.
  func rows(_ b: Batch) throws -> [(desirable: Bool, prompt: [Int], answer: [Int])] {
    try (0..<b.batchSize).map { r in
      let e = ReferenceLogProbs.rowExample(b, r)
      guard let label = labels[ReferenceLogProbs.key(e)] else {
        throw TrainingError.invalidBatch("a KTO row without a label (not among the task's examples)")
      }
      guard let first = e.targets.firstIndex(where: { $0 != TokenizedExample.ignoreIndex }) else {
        throw TrainingError.invalidBatch("KTO row \(r) has no answer token")
      }
      return (label, Array(e.inputIds[...first]), Array(e.inputIds[(first + 1)...]))
    }
  }

  /// ids/targets (B, T) of prompt + answer rows, right-padded with `pad`.
  static func sequences(_ rows: [(prompt: [Int], answer: [Int])], pad: Int) -> (ids: [Int32], targets: [Int32]) {
    let t = rows.map { $0.prompt.count + $0.answer.count }.max() ?? 1
    var ids = [Int32](repeating: Int32(pad), count: rows.count * t)
    var targets = [Int32](repeating: Int32(DecoderModel.ignoreIndex), count: rows.count * t)
    for (r, row) in rows.enumerated() {
      for (i, id) in (row.prompt + row.answer).enumerated() { ids[r * t + i] = Int32(id) }
      for (j, id) in row.answer.enumerated() { targets[r * t + row.prompt.count + j - 1] = Int32(id) }
    }
    return (ids, targets)
  }

  /// Summed answer log-probs of `rows` under the model as it is (no gradients).
  func logProbs(_ rows: [(prompt: [Int], answer: [Int])]) throws -> [Double] {
    let (ids, targets) = Self.sequences(rows, pad: 0)
    try model.forward(ids: ids, targets: targets, batch: rows.count, lossNormalizer: 1, logProbsOnly: true)
    return rowLogProbs(tokenLosses: try model.tokenLosses(), targets: targets, rows: rows.count).logps
  }

  /// The KL estimate: mean over the batch of policy − reference log-probs of each prompt with
  /// the previous row's answer (row 0 with the last: TRL's rotation), clamped at 0.
  func klEstimate(_ rows: [(desirable: Bool, prompt: [Int], answer: [Int])]) throws -> Double {
    guard loss.lossType == .kto, rows.count > 1 else { return 0 }
    let mismatched = rows.indices.map { i in (prompt: rows[i].prompt, answer: rows[(i + rows.count - 1) % rows.count].answer) }
    let policy = try logProbs(mismatched)
    lora.enabled = false
    defer { lora.enabled = true }
    let reference = try logProbs(mismatched)
    return max(0, zip(policy, reference).reduce(0) { $0 + $1.0 - $1.1 } / Double(rows.count))
  }

  public func forwardBackward(_ batch: Batch, lossNormalizer: Float, dropoutSeed: UInt64) throws -> Float {
    let rows = try rows(batch)
    let plain = rows.map { (prompt: $0.prompt, answer: $0.answer) }
    try lora.setDropoutSeed(dropoutSeed)
    let z = try klEstimate(rows)
    lora.enabled = false
    let reference = try logProbs(plain)
    lora.enabled = true
    let (ids, targets) = Self.sequences(plain, pad: 0)
    try model.stage(ids: ids, targets: targets, batch: rows.count, auxLossWeight: 0)
    try model.forwardStaged(lossNormalizer: .value(1), computeGradients: true, weightedLater: true)
    let policy = rowLogProbs(tokenLosses: try model.tokenLosses(), targets: targets, rows: rows.count).logps
    let out = KTOMath.loss(loss, policy: policy, reference: reference, desirable: rows.map(\.desirable), kl: z)
    // dL/dlogits = Σ (dL/dπ)·dπ/dlogits; the cross-entropy gradient is −dπ/dlogits per token.
    let t = targets.count / rows.count
    try model.backward(tokenWeights: (0..<targets.count).map { Float(-out.gradient[$0 / t]) / lossNormalizer })
    record(policy: policy, reference: reference, rows: rows, kl: z, training: true)
    return Float(out.loss) / lossNormalizer
  }

  /// Loss summed over the batch's rows and their count.
  public func evaluate(_ batch: Batch) throws -> (lossSum: Double, tokens: Int) {
    let rows = try rows(batch)
    let plain = rows.map { (prompt: $0.prompt, answer: $0.answer) }
    lora.training = false
    defer { lora.training = true }
    let z = try klEstimate(rows)
    let policy = try logProbs(plain)
    lora.enabled = false
    let reference = try logProbs(plain)
    lora.enabled = true
    let out = KTOMath.loss(loss, policy: policy, reference: reference, desirable: rows.map(\.desirable), kl: z)
    record(policy: policy, reference: reference, rows: rows, kl: z, training: false)
    return (out.loss * Double(rows.count), rows.count)
  }

  /// TRL's logged values: rewards/chosen|rejected (mean β·r of that side), logps/chosen|rejected
  /// (mean summed log-prob), kl; rewards/margins is derived when taken.
  private func record(policy: [Double], reference: [Double], rows: [(desirable: Bool, prompt: [Int], answer: [Int])],
                      kl: Double, training: Bool) {
    func add(_ k: String, _ v: Double) {
      if training { trainSums[k, default: 0] += v; trainCounts[k, default: 0] += 1 } else {
        evalSums[k, default: 0] += v; evalCounts[k, default: 0] += 1
      }
    }
    for (i, row) in rows.enumerated() {
      let side = row.desirable ? "chosen" : "rejected"
      add("rewards/\(side)", loss.beta * (policy[i] - reference[i]))
      add("logps/\(side)", policy[i])
    }
    add("kl", kl)
  }
}
