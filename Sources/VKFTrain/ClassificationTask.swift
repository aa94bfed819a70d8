// Sequence classification (BERT + pooler + classifier, cross-entropy over the labels) as a
// trainer task: a batch row is one sentence, its label at target position 0.
import VKFCore
import VKFData
import VKFModel
import VKFPEFT

/// Trains a `BertModel` on labelled rows; logs accuracy and F1 beside the loss.
public final class ClassificationTask: TrainingTask {
  public let model: BertModel
  public let trainableTensors: [TrainableTensor]
  private let zero: () throws -> Void
  private let dropoutSeedSetter: (UInt64) throws -> Void
  private let trainingModeSetter: (Bool) -> Void
  private var trainCounts: ClassificationCounts
  private var evalCounts: ClassificationCounts

  /// A task training `trainables` (all of the model's for full fine-tuning; adapters plus the
  /// classifier otherwise).
  public init(model: BertModel, trainables: [TrainableTensor], zero: @escaping () throws -> Void,
              setDropoutSeed: @escaping (UInt64) throws -> Void = { _ in },
              setTraining: @escaping (Bool) -> Void = { _ in }) {
    self.model = model; trainableTensors = trainables; self.zero = zero
    dropoutSeedSetter = setDropoutSeed; trainingModeSetter = setTraining
    trainCounts = ClassificationCounts(labels: model.weights.numLabels)
    evalCounts = trainCounts
  }

  /// Full fine-tuning: every parameter the weights carry a gradient for.
  public convenience init(fullFineTuning model: BertModel) {
    let w = model.weights
    self.init(model: model, trainables: w.trainableTensors, zero: { try w.zeroGradients() })
  }

  /// LoRA on the encoder's projections plus the fully trained classifier, named as PEFT's
  /// SEQ_CLS adapter stores it (`base_model.model.classifier.weight` / `.bias`).
  public convenience init(model: BertModel, lora: LoRAModel) {
    let w = model.weights
    let head = w.trainableTensors.filter { $0.name.hasPrefix("classifier.") }.map {
      TrainableTensor(name: "base_model.model." + $0.name, value: $0.value, gradient: $0.gradient, decays: $0.decays)
    }
    self.init(model: model, trainables: lora.trainableTensors + head,
              zero: { try lora.zeroGradients(); try w.zeroGradients() },
              setDropoutSeed: { try lora.setDropoutSeed($0) }, setTraining: { lora.training = $0 })
  }

  public var backend: Backend { model.backend }
  public func zeroGradients() throws { try zero() }

  public func forwardBackward(_ batch: Batch, lossNormalizer: Float, dropoutSeed: UInt64) throws -> Float {
    let rows = try Self.rows(batch)
    guard rows.labels.contains(where: { $0 != BertModel.ignoreIndex }) else { return 0 }
    try dropoutSeedSetter(dropoutSeed)
    try model.forward(ids: rows.ids, lengths: rows.lengths, batch: batch.batchSize, labels: rows.labels,
                      lossNormalizer: lossNormalizer, computeGradients: true)
    let loss = try model.loss()
    trainCounts.add(logits: try model.logits(), labels: rows.labels)
    try model.backward()
    return loss
  }

  public func evaluate(_ batch: Batch) throws -> (lossSum: Double, tokens: Int) {
    let rows = try Self.rows(batch)
    let labelled = rows.labels.filter { $0 != BertModel.ignoreIndex }.count
    guard labelled > 0 else { return (0, 0) }
    trainingModeSetter(false)
    defer { trainingModeSetter(true) }
    try model.forward(ids: rows.ids, lengths: rows.lengths, batch: batch.batchSize, labels: rows.labels, lossNormalizer: 1)
    evalCounts.add(logits: try model.logits(), labels: rows.labels)
    return (Double(try model.loss()), labelled)
  }

  /// The predicted label of every row of `batch` (no gradients).
  public func predictions(_ batch: Batch) throws -> [Int] {
    let rows = try Self.rows(batch)
    trainingModeSetter(false)
    defer { trainingModeSetter(true) }
    try model.forward(ids: rows.ids, lengths: rows.lengths, batch: batch.batchSize)
    return ClassificationCounts.argmax(try model.logits(), labels: model.weights.numLabels)
  }

  public func takeMetrics(training: Bool) -> [String: Double] {
    defer {
      if training { trainCounts = ClassificationCounts(labels: trainCounts.labels) }
      else { evalCounts = ClassificationCounts(labels: evalCounts.labels) }
    }
    return (training ? trainCounts : evalCounts).metrics
  }

  /// ids as Int32, each row's real length (its one example; padding after) and its label.
  static func rows(_ batch: Batch) throws -> (ids: [Int32], lengths: [Int32], labels: [Int32]) {
    let (ids, lengths, targets) = try encoderRows(batch, what: "classification rows hold one example each")
    let t = batch.seqLength
    return (ids, lengths, (0..<batch.batchSize).map { targets[$0 * t] })
  }
}

/// Confusion counts → accuracy and F1 (binary: of label 1, as GLUE reports it; more labels:
/// the macro average, scikit-learn's `f1_score(average="macro")`).
struct ClassificationCounts {
  let labels: Int
  /// confusion[truth][prediction]
  var confusion: [[Int]]

  init(labels: Int) {
    self.labels = labels
    confusion = [[Int]](repeating: [Int](repeating: 0, count: labels), count: labels)
  }

  static func argmax(_ logits: [Float], labels: Int) -> [Int] {
    stride(from: 0, to: logits.count, by: labels).map { start in
      let row = logits[start..<start + labels]
      return (row.indices.max { row[$0] < row[$1] } ?? start) - start
    }
  }

  mutating func add(logits: [Float], labels truth: [Int32]) {
    for (p, t) in zip(Self.argmax(logits, labels: labels), truth) where t >= 0 && Int(t) < labels {
      confusion[Int(t)][p] += 1
    }
  }

  var metrics: [String: Double] {
    let total = confusion.reduce(0) { $0 + $1.reduce(0, +) }
    guard total > 0 else { return [:] }
    let correct = (0..<labels).reduce(0) { $0 + confusion[$1][$1] }
    func f1(_ c: Int) -> Double {
      let tp = Double(confusion[c][c])
      let predicted = Double((0..<labels).reduce(0) { $0 + confusion[$1][c] })
      let actual = Double(confusion[c].reduce(0, +))
      return predicted + actual == 0 ? 0 : 2 * tp / (predicted + actual)
    }
    let f = labels == 2 ? f1(1) : (0..<labels).map(f1).reduce(0, +) / Double(labels)
    return ["accuracy": Double(correct) / Double(total), "f1": f]
  }
}

/// Masked-language-model training of a `BertModel` with the masked-LM head: rows carry their
/// masked ids and, at the masked tokens, the original ids as targets (`MaskedLMDataset`).
/// The loss is the mean cross-entropy over the step's masked tokens; evaluation reports it
/// and its perplexity.
public final class MaskedLMTask: TrainingTask {
  public let model: BertModel
  public let trainableTensors: [TrainableTensor]

  public init(fullFineTuning model: BertModel) {
    self.model = model
    trainableTensors = model.weights.trainableTensors
  }

  public var backend: Backend { model.backend }
  public func zeroGradients() throws { try model.weights.zeroGradients() }

  public func forwardBackward(_ batch: Batch, lossNormalizer: Float, dropoutSeed: UInt64) throws -> Float {
    let (ids, lengths, targets) = try Self.rows(batch)
    guard targets.contains(where: { $0 != BertModel.ignoreIndex }) else { return 0 }
    try model.forwardMaskedLM(ids: ids, lengths: lengths, batch: batch.batchSize, targets: targets,
                              lossNormalizer: lossNormalizer, computeGradients: true)
    let loss = try model.loss()
    try model.backward()
    return loss
  }

  public func evaluate(_ batch: Batch) throws -> (lossSum: Double, tokens: Int) {
    let (ids, lengths, targets) = try Self.rows(batch)
    let masked = targets.filter { $0 != BertModel.ignoreIndex }.count
    guard masked > 0 else { return (0, 0) }
    try model.forwardMaskedLM(ids: ids, lengths: lengths, batch: batch.batchSize, targets: targets, lossNormalizer: 1)
    return (Double(try model.loss()), masked)
  }

  static func rows(_ batch: Batch) throws -> (ids: [Int32], lengths: [Int32], targets: [Int32]) {
    try encoderRows(batch, what: "masked-LM rows hold one piece each")
  }
}

/// An encoder batch's ids and targets as Int32 and each row's real length: every row holds
/// one example from column 0 (no packing), right-padded; `what` names the rule in the error.
func encoderRows(_ batch: Batch, what: String) throws -> (ids: [Int32], lengths: [Int32], targets: [Int32]) {
  let (ids, targets) = try SFTTask.int32(batch)
  guard batch.boundaries.count == batch.batchSize,
        batch.boundaries.allSatisfy({ $0.count == 1 && $0[0].lowerBound == 0 }) else {
    throw TrainingError.invalidBatch("\(what), from column 0 (no packing)")
  }
  return (ids, batch.boundaries.map { Int32($0[0].count) }, targets)
}
