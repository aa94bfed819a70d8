import Foundation
import XCTest
import VKFCore
import VKFData
import VKFModel
import VKFTestSupport
@testable import VKFTrain

/// Parameters of a tiny Llama held in memory (the `WeightSource` the model loads from).
final class MemoryWeights: WeightSource, @unchecked Sendable {
  let tensors: [String: ([Int], [Float])]
  init(_ tensors: [String: ([Int], [Float])]) { self.tensors = tensors }
  var tensorNames: [String] { tensors.keys.sorted() }
  func shape(of name: String) throws -> [Int] {
    guard let t = tensors[name] else { throw VKFError.other("no tensor \(name)") }
    return t.0
  }
  func storedType(of name: String) throws -> String { "F32" }
  func floats(_ name: String) throws -> [Float] {
    guard let t = tensors[name] else { throw VKFError.other("no tensor \(name)") }
    return t.1
  }
}

/// A tiny seeded model and a learnable synthetic dataset shared by the trainer tests.
enum Tiny {
  /// 2 layers, GQA 4/2 heads, untied head: every parameter kind of a real model, small
  /// enough that a 20-step run takes well under a second on the CPU and seconds on lavapipe.
  static let shape = TransformerShape(hidden: 32, layers: 2, heads: 4, kvHeads: 2, intermediate: 48, vocab: 40,
                                      rmsNormEps: 1e-5, ropeTheta: 10_000, tiedEmbeddings: false, qkvBias: false)

  /// Seeded weights: norms 1, matrices uniform in ±0.15.
  static let weights: MemoryWeights = {
    var out: [String: ([Int], [Float])] = [:]
    for (i, (name, s)) in shape.parameterShapes.enumerated() {
      let n = s.reduce(1, *)
      out[name] = (s, name.hasSuffix("norm.weight") ? Array(repeating: 1, count: n)
                                                    : TestData.uniform(n, seed: 100 + UInt64(i), -0.15, 0.15))
    }
    return MemoryWeights(out)
  }()

  /// `shape` with 4 experts (top-2, width 16) in layer 1 beside a dense layer 0, and the
  /// load-balancing loss on (× 0.1): the mixture-of-experts path of the same tiny model.
  static let expertShape: TransformerShape = {
    var s = shape
    s.moe = MoEShape(style: .qwen3, experts: 4, topK: 2, intermediate: 16, normalizeTopK: false,
                     sparseLayers: [false, true], auxLossCoefficient: 0.1)
    return s
  }()

  /// Seeded weights of `expertShape` (routers ±1, so tokens prefer experts).
  static let expertWeights: MemoryWeights = {
    var out: [String: ([Int], [Float])] = [:]
    for (i, (name, s)) in expertShape.parameterShapes.enumerated() {
      let n = s.reduce(1, *), router = name.hasSuffix("mlp.gate.weight")
      out[name] = (s, name.hasSuffix("norm.weight") ? Array(repeating: 1, count: n)
                                                    : TestData.uniform(n, seed: 300 + UInt64(i), router ? -1 : -0.15, router ? 1 : 0.15))
    }
    return MemoryWeights(out)
  }()

  /// A fresh full-fine-tuning task of the mixture-of-experts model.
  static func expertTask(on backend: Backend) throws -> SFTTask {
    let w = try DecoderWeights(from: expertWeights, shape: expertShape, backend: backend, trainable: .all)
    return SFTTask(fullFineTuning: try DecoderModel(weights: w))
  }

  /// A fresh full-fine-tuning task on `backend` (same initial weights every call).
  static func fullTask(on backend: Backend) throws -> SFTTask {
    let w = try DecoderWeights(from: weights, shape: shape, backend: backend, trainable: .all)
    return SFTTask(fullFineTuning: try DecoderModel(weights: w))
  }

  /// Sequences that count up by a per-example stride (mod vocab) from a random start: the
  /// next token is predictable from the previous two, so the loss falls quickly. The first
  /// two targets are masked like a prompt; lengths vary so batches need padding.
  static func examples(_ count: Int, seed: UInt64) throws -> [TokenizedExample] {
    var rng = SeededRNG(seed: seed)
    return (0..<count).map { _ in
      let length = Int.random(in: 5...11, using: &rng)
      let start = Int.random(in: 0..<shape.vocab, using: &rng), stride = Int.random(in: 1...3, using: &rng)
      let ids = (0..<length).map { (start + $0 * stride) % shape.vocab }
      var targets = Array(ids.dropFirst()) + [TokenizedExample.ignoreIndex]
      targets[0] = TokenizedExample.ignoreIndex; targets[1] = TokenizedExample.ignoreIndex
      return TokenizedExample(inputIds: ids, targets: targets)
    }
  }

  /// A config for short runs: constant LR large enough to move a tiny model, log every step.
  static func config(steps: Int = -1, epochs: Int = 1, micro: Int = 2, accumulation: Int = 2) -> TrainingConfig {
    var c = TrainingConfig()
    c.learningRate = 1e-2
    c.lrSchedulerType = "linear"
    c.warmupSteps = 2
    c.maxSteps = steps
    c.numTrainEpochs = Double(epochs)
    c.perDeviceTrainBatchSize = micro
    c.gradientAccumulationSteps = accumulation
    c.maxSeqLength = 10
    c.weightDecay = 0.01
    c.maxGradNorm = 1
    c.loggingSteps = 1
    c.seed = 7
    c.evalOnStart = false  // tests count evaluations; TrainerTests covers the start evaluation
    return c
  }

  /// The trainables' values by name.
  static func values(_ task: TrainingTask) throws -> [String: [Float]] {
    var out: [String: [Float]] = [:]
    for t in task.trainableTensors { out[t.name] = try task.backend.floats(t.value) }
    return out
  }

  /// Runs a trainer and returns the per-step losses it logged.
  @discardableResult
  static func run(_ trainer: Trainer) throws -> [Double] {
    var losses: [Double] = []
    let previous = trainer.onEvent
    trainer.onEvent = { e in
      if case .progress(let p) = e { losses.append(p.loss) }
      previous?(e)
    }
    try trainer.train()
    return losses
  }

  /// A fresh empty directory under the temporary directory.
  static func temporaryDirectory(_ name: String) throws -> URL {
    let url = FileManager.default.temporaryDirectory
      .appendingPathComponent("vkf-train-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
  }

  /// The Vulkan backend, a skip without one (a failure under VKF_REQUIRE_VULKAN=1).
  static func vulkanOrSkip() throws -> Backend {
    if let vk = TestBackends.vulkan { return vk }
    if ProcessInfo.processInfo.environment["VKF_REQUIRE_VULKAN"] == "1" {
      XCTFail("VKF_REQUIRE_VULKAN=1 but no Vulkan backend: \(TestBackends.vulkanResult)")
    }
    throw XCTSkip("no Vulkan device")
  }
}

/// Wraps a task to script failures and evaluation losses.
final class ScriptedTask: TrainingTask {
  let inner: TrainingTask
  /// forwardBackward call index (0-based) → what to inject.
  var inject: [Int: Injection] = [:]
  /// Evaluation losses per evaluation call (mean per token); nil: the real evaluation.
  var evaluationLosses: [Double]?
  private var calls = 0, evaluations = 0

  enum Injection { case nanLoss, nanGradient }

  init(_ inner: TrainingTask) { self.inner = inner }
  var backend: Backend { inner.backend }
  var trainableTensors: [TrainableTensor] { inner.trainableTensors }
  func zeroGradients() throws { try inner.zeroGradients() }

  func forwardBackward(_ batch: Batch, lossNormalizer: Float, dropoutSeed: UInt64) throws -> Float {
    defer { calls += 1 }
    let loss = try inner.forwardBackward(batch, lossNormalizer: lossNormalizer, dropoutSeed: dropoutSeed)
    switch inject[calls] {
    case .nanLoss?: return .nan
    case .nanGradient?:
      let g = trainableTensors[0].gradient
      try backend.upload([Float](repeating: .nan, count: g.count), to: g)
      return loss
    case nil: return loss
    }
  }

  func evaluate(_ batch: Batch) throws -> (lossSum: Double, tokens: Int) {
    guard let script = evaluationLosses else { return try inner.evaluate(batch) }
    // One scripted value per call: tests using a script give the trainer one validation batch.
    let r = try inner.evaluate(batch)
    defer { evaluations += 1 }
    return (script[min(evaluations, script.count - 1)] * Double(r.tokens), r.tokens)
  }
}
