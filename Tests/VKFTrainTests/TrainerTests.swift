import Foundation
import XCTest
import VKFCore
import VKFData
import VKFModel
import VKFTestSupport
@testable import VKFTrain

/// The training loop on a tiny full-fine-tuned Llama: learning, accumulation, paged optimizer
/// state, evaluation, early stopping, non-finite stops and metrics.
final class TrainerTests: XCTestCase {
  /// 2 micro-batches of 2 vs 1 of 4 after 3 AdamW steps: the same per-token terms summed in
  /// another grouping and padded to other widths (so OpenBLAS may block the matmuls
  /// differently): f32 reassociation only (measured worst 1.2e-7, one ulp of the weights).
  /// 1e-5 absolute is 1e-3 of one step's update (lr 1e-2) and still catches a mis-weighted
  /// micro-batch (≳1e-4).
  static let accumulationParameterMaxAbs = 1e-5
  /// NMSE guard for the same comparison.
  static let accumulationParameterNMSE = 1e-10
  /// Step losses of the two groupings: reassociated f32 sums of ~100 terms.
  static let accumulationLossRelative = 1e-5
  /// metrics.jsonl holds Swift's shortest round-trip decimal; Foundation's JSON parser on
  /// Linux may land one or two ulps away when reading it back.
  static let jsonReadBackRelative = 1e-14

  func test_fullFineTuning_lossFalls() throws {
    let task = try Tiny.fullTask(on: TestBackends.cpu)
    var c = Tiny.config(steps: 30, micro: 4, accumulation: 1)
    c.lrSchedulerType = "constant"
    c.warmupSteps = 0
    let trainer = try Trainer(task: task, config: c, train: try Tiny.examples(24, seed: 1))
    let losses = try Tiny.run(trainer)
    XCTAssertEqual(losses.count, 30)
    let first = losses[0], last = losses.suffix(3).reduce(0, +) / 3
    // An untrained model over 40 tokens starts near ln 40 ≈ 3.7; the counting pattern is learnable.
    XCTAssertGreaterThan(first, 3)
    XCTAssertLessThan(last, 0.6 * first, "losses \(losses)")
  }

  /// Packed rows: every micro-batch is maxSeqLength wide, the run's step count follows the
  /// packed row count, and the loss falls.
  func test_packing_trainsOnPackedRows() throws {
    let data = try Tiny.examples(24, seed: 12)
    var c = Tiny.config(epochs: 2, micro: 2, accumulation: 1)
    c.packing = true
    c.maxSeqLength = 24
    let task = try Tiny.fullTask(on: TestBackends.cpu)
    let trainer = try Trainer(task: task, config: c, train: data)
    let rows0 = trainer.plan.microBatches(epoch: 0), rows1 = trainer.plan.microBatches(epoch: 1)
    XCTAssertTrue((rows0 + rows1).allSatisfy { $0.seqLength == 24 })
    XCTAssertNotEqual(rows0, rows1, "each epoch is reshuffled")
    XCTAssertEqual(trainer.totalSteps, rows0.count + rows1.count)
    XCTAssertLessThan(rows0.count, 12, "packing puts several examples in a row")
    let losses = try Tiny.run(trainer)
    XCTAssertLessThan(losses.suffix(2).reduce(0, +), losses.prefix(2).reduce(0, +), "\(losses)")
  }

  func test_accumulation_twoByTwo_equalsBatchOfFour() throws {
    let data = try Tiny.examples(12, seed: 2)
    var results: [(losses: [Double], values: [String: [Float]])] = []
    for (micro, accumulation) in [(2, 2), (4, 1)] {
      let task = try Tiny.fullTask(on: TestBackends.cpu)
      let trainer = try Trainer(task: task, config: Tiny.config(micro: micro, accumulation: accumulation), train: data)
      XCTAssertEqual(trainer.totalSteps, 3)
      let losses = try Tiny.run(trainer)
      results.append((losses, try Tiny.values(task)))
    }
    for (a, b) in zip(results[0].losses, results[1].losses) {
      XCTAssertEqual(a, b, accuracy: abs(b) * Self.accumulationLossRelative)
    }
    for (name, e) in results[1].values.sorted(by: { $0.key < $1.key }) {
      if let why = Compare.check(e, results[0].values[name] ?? [], nmse: Self.accumulationParameterNMSE,
                                 maxAbs: Self.accumulationParameterMaxAbs) {
        XCTFail("\(name): \(why)")
      }
    }
  }

  func test_pagedOptimizerState_bitwiseEqualsDevice_cpu() throws { try checkPaging(on: TestBackends.cpu) }
  func test_pagedOptimizerState_bitwiseEqualsDevice_vulkan() throws { try checkPaging(on: try Tiny.vulkanOrSkip()) }

  /// AdamW is elementwise, so streaming m and v through a 64-element device window (every
  /// tensor in several chunks) must give bit-identical parameters and moments.
  private func checkPaging(on backend: Backend) throws {
    let data = try Tiny.examples(8, seed: 3)
    var results: [([String: [Float]], [String: ([Int], [Float])])] = []
    for placement in [OptimizerStatePlacement.device, .host] {
      let task = try Tiny.fullTask(on: backend)
      let trainer = try Trainer(task: task, config: Tiny.config(steps: 3), train: data, optimizerState: placement,
                                windowElements: 64)
      XCTAssertEqual(trainer.optimizer.stateMemory, placement == .device ? .device : .hostVisible)
      try Tiny.run(trainer)
      results.append((try Tiny.values(task), try trainer.optimizer.stateValues()))
    }
    XCTAssertFalse(results[0].0.isEmpty)
    for (name, v) in results[0].0 { XCTAssertTrue(results[1].0[name] == v, "\(name) on \(backend.name)") }
    for (key, s) in results[0].1 { XCTAssertTrue(results[1].1[key]?.1 == s.1, "\(key) on \(backend.name)") }
  }

  func test_autoPlacement_followsBudget() throws {
    let task = try Tiny.fullTask(on: TestBackends.cpu)
    let elements = task.trainableTensors.reduce(0) { $0 + $1.count }
    let state = AdamW.stateBytes(elements: elements)
    let fits = try AdamW(parameters: task.trainableTensors, placement: .auto(budgetBytes: 1000 + state),
                         otherDeviceBytes: 1000, backend: task.backend)
    XCTAssertEqual(fits.stateMemory, .device)
    let paged = try AdamW(parameters: task.trainableTensors, placement: .auto(budgetBytes: 999 + state),
                          otherDeviceBytes: 1000, backend: task.backend)
    XCTAssertEqual(paged.stateMemory, .hostVisible)
    XCTAssertEqual(try OptimizerStatePlacement.parse("host", budgetBytes: nil), .host)
    XCTAssertThrowsError(try OptimizerStatePlacement.parse("auto", budgetBytes: nil))
    XCTAssertThrowsError(try OptimizerStatePlacement.parse("gpu", budgetBytes: nil))
  }

  /// Weight decay only where `decays`: with zero gradients AdamW leaves m = v = 0 and only
  /// the decay p·(1 − lr·wd) moves parameters, so norms stay and matrices shrink exactly.
  func test_weightDecay_onlyOnDecayingTensors() throws {
    let task = try Tiny.fullTask(on: TestBackends.cpu)
    let before = try Tiny.values(task)
    let opt = try AdamW(parameters: task.trainableTensors, config: AdamWConfig(weightDecay: 0.5, maxGradNorm: 1),
                        backend: task.backend)
    try task.zeroGradients()
    XCTAssertEqual(try opt.gradientNorm(), 0)
    try opt.update(lr: 0.1)
    let after = try Tiny.values(task)
    for t in task.trainableTensors {
      let b = before[t.name] ?? [], a = after[t.name] ?? []
      XCTAssertEqual(a, t.decays ? b.map { $0 * (1 - Float(0.1) * 0.5) } : b, t.name)
    }
    XCTAssertTrue(task.trainableTensors.contains { !$0.decays })
  }

  // MARK: - Evaluation, early stopping, non-finite stops

  func test_earlyStopping_stopsAfterPatience_restoresBest() throws {
    let task = ScriptedTask(try Tiny.fullTask(on: TestBackends.cpu))
    task.evaluationLosses = [3.0, 2.0, 2.5, 2.6, 2.7, 2.8]
    var c = Tiny.config(steps: 10)
    c.evalSteps = 1
    c.earlyStoppingPatience = 2
    c.perDeviceEvalBatchSize = 8
    let trainer = try Trainer(task: task, config: c, train: try Tiny.examples(12, seed: 4),
                              validation: try Tiny.examples(3, seed: 5))
    var bestSteps: [Int] = [], bestValues: [String: [Float]] = [:], stopped: (Int, Int)?
    trainer.saveBest = { r, t in bestSteps.append(r.step); bestValues = try Tiny.values(t) }
    trainer.onEvent = { if case .earlyStopped(let s, let b) = $0 { stopped = (s, b) } }
    let summary = try trainer.train()
    XCTAssertTrue(summary.stoppedEarly)
    XCTAssertEqual(summary.steps, 4)
    XCTAssertEqual(summary.bestEvaluation?.step, 2)
    XCTAssertEqual(summary.bestEvaluation?.loss, 2.0)
    XCTAssertEqual(bestSteps, [1, 2])
    XCTAssertEqual(stopped?.0, 4); XCTAssertEqual(stopped?.1, 2)
    XCTAssertEqual(try Tiny.values(task), bestValues, "the best trainables are restored at the end")
  }

  /// eval_on_start: one evaluation before any update, equal to the untrained model's loss.
  func test_evalOnStart_evaluatesTheUntrainedModelFirst() throws {
    let validation = try Tiny.examples(3, seed: 10)
    var c = Tiny.config(steps: 4)
    c.evalSteps = 2
    c.evalOnStart = true
    let baseline = try Trainer(task: try Tiny.fullTask(on: TestBackends.cpu), config: c,
                               train: try Tiny.examples(12, seed: 9), validation: validation)
    let untrained = try XCTUnwrap(try baseline.evaluate())
    let trainer = try Trainer(task: try Tiny.fullTask(on: TestBackends.cpu), config: c,
                              train: try Tiny.examples(12, seed: 9), validation: validation)
    var evaluations: [EvaluationResult] = []
    trainer.onEvent = { if case .evaluation(let r) = $0 { evaluations.append(r) } }
    try trainer.train()
    XCTAssertEqual(evaluations.map(\.step), [0, 2, 4])
    XCTAssertEqual(evaluations.first?.loss, untrained.loss)
    XCTAssertLessThan(evaluations.last?.loss ?? .infinity, untrained.loss, "training lowers the validation loss")
  }

  func test_evaluation_meanLossAndPerplexity() throws {
    let task = try Tiny.fullTask(on: TestBackends.cpu)
    let validation = try Tiny.examples(5, seed: 6)
    var c = Tiny.config(steps: 1)
    c.perDeviceEvalBatchSize = 2
    c.maxSeqLength = 16  // longer than every example: nothing is cut
    let trainer = try Trainer(task: task, config: c, train: try Tiny.examples(4, seed: 7), validation: validation)
    let r = try XCTUnwrap(try trainer.evaluate())
    // Reference: each example alone, summed loss / summed tokens.
    var sum = 0.0, tokens = 0
    for e in validation {
      let b = Batching.batches([e], batchSize: 1, padID: 0)[0]
      let one = try task.evaluate(b)
      sum += one.lossSum; tokens += one.tokens
    }
    XCTAssertEqual(r.tokens, tokens)
    // Padding rows change only the batch's summation order: f32 sums of ~10 terms.
    XCTAssertEqual(r.loss, sum / Double(tokens), accuracy: 1e-5 * r.loss)
    XCTAssertEqual(r.perplexity, exp(r.loss), accuracy: 1e-9 * r.perplexity)
  }

  func test_nanLoss_stopsNamingStep_keepsLastCheckpoint() throws {
    try checkNonFinite(.nanLoss, call: 8, what: "the training loss")
  }

  func test_nanGradient_stopsNamingStep_keepsLastCheckpoint() throws {
    try checkNonFinite(.nanGradient, call: 9, what: "the gradient norm")
  }

  /// With 2 micro-batches per step, call 8 or 9 is step 5: checkpoints exist for steps 2 and 4,
  /// the error names step 5 and checkpoint-4, and the parameters are still step 4's.
  private func checkNonFinite(_ injection: ScriptedTask.Injection, call: Int, what: String) throws {
    let dir = try Tiny.temporaryDirectory("nan")
    defer { try? FileManager.default.removeItem(at: dir) }
    let task = ScriptedTask(try Tiny.fullTask(on: TestBackends.cpu))
    task.inject[call] = injection
    var c = Tiny.config(steps: 8)
    c.saveSteps = 2
    let trainer = try Trainer(task: task, config: c, train: try Tiny.examples(12, seed: 8), outputDirectory: dir)
    XCTAssertThrowsError(try trainer.train()) { error in
      guard case TrainingError.nonFinite(let step, let w, _, let last) = error else {
        return XCTFail("unexpected \(error)")
      }
      XCTAssertEqual(step, 5)
      XCTAssertEqual(w, what)
      XCTAssertEqual(last, dir.appendingPathComponent("checkpoint-4").path)
      XCTAssertTrue("\(error)".contains("step 5"), "\(error)")
    }
    XCTAssertEqual(trainer.step, 4)
    XCTAssertEqual(CheckpointLayout.checkpoints(in: dir).map(\.step), [4, 2])
    let saved = try SafetensorsFile(contentsOf: dir.appendingPathComponent("checkpoint-4/trainables.safetensors"))
    for t in task.trainableTensors {
      XCTAssertEqual(try saved.floats(t.name), try task.backend.floats(t.value), t.name)
    }
  }

  // MARK: - Logging

  func test_metricsJsonl_andLossCurve() throws {
    let dir = try Tiny.temporaryDirectory("metrics")
    defer { try? FileManager.default.removeItem(at: dir) }
    let task = try Tiny.fullTask(on: TestBackends.cpu)
    var c = Tiny.config(steps: 6)
    c.loggingSteps = 2
    c.evalSteps = 3
    let trainer = try Trainer(task: task, config: c, train: try Tiny.examples(12, seed: 9),
                              validation: try Tiny.examples(3, seed: 10), outputDirectory: dir)
    var progress: [TrainingProgress] = [], evaluations: [EvaluationResult] = []
    trainer.onEvent = { e in
      switch e {
      case .progress(let p): progress.append(p)
      case .evaluation(let r): evaluations.append(r)
      default: break
      }
    }
    try trainer.train()
    let text = try String(contentsOf: dir.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
    let lines = try text.split(separator: "\n").map {
      try XCTUnwrap(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
    }
    XCTAssertEqual(lines.compactMap { $0["step"] as? Int }, [2, 3, 4, 6, 6])
    XCTAssertEqual(progress.map(\.step), [2, 4, 6])
    XCTAssertEqual(evaluations.map(\.step), [3, 6])
    let trainLines = lines.filter { $0["loss"] != nil }, evalLines = lines.filter { $0["eval_loss"] != nil }
    XCTAssertEqual(trainLines.count, 3); XCTAssertEqual(evalLines.count, 2)
    for (line, p) in zip(trainLines, progress) {
      assertClose(line["loss"], p.loss)
      assertClose(line["learning_rate"], Double(p.learningRate))
      assertClose(line["grad_norm"], Double(p.gradNorm))
      for key in ["epoch", "tokens_per_second", "elapsed_s"] { XCTAssertNotNil(line[key] as? Double, key) }
      XCTAssertTrue(p.line.hasPrefix("step \(p.step)/6 | loss "), p.line)
    }
    for (line, r) in zip(evalLines, evaluations) {
      assertClose(line["eval_loss"], r.loss)
      assertClose(line["eval_perplexity"], r.perplexity)
      XCTAssertEqual(line["eval_tokens"] as? Int, r.tokens)
    }
    let svg = try String(contentsOf: dir.appendingPathComponent("loss-curve.svg"), encoding: .utf8)
    XCTAssertFalse(svg.contains("id=\"reward\""), "no reward panel without rewards")
    XCTAssertTrue(svg.hasPrefix("<svg") && svg.contains("<polyline id=\"train\""), svg)
    XCTAssertEqual(svg.components(separatedBy: "class=\"eval\"").count - 1, 2)
    let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix(".vkf-tmp") }
    XCTAssertEqual(leftovers, [])
  }

  private func assertClose(_ value: Any?, _ expected: Double, line: UInt = #line) {
    guard let v = value as? Double else { return XCTFail("\(String(describing: value)) is not a number", line: line) }
    XCTAssertEqual(v, expected, accuracy: abs(expected) * Self.jsonReadBackRelative, line: line)
  }

  // MARK: - Config

  func test_config_decodesTransformersKeys_andValidates() throws {
    let json = #"{"learning_rate": 0.001, "per_device_train_batch_size": 8, "gradient_accumulation_steps": 4,"#
      + #" "lr_scheduler_type": "cosine", "warmup_ratio": 0.1, "max_steps": 100, "seed": 3}"#
    let c = try JSONDecoder().decode(TrainingConfig.self, from: Data(json.utf8))
    XCTAssertEqual(c.learningRate, 0.001); XCTAssertEqual(c.perDeviceTrainBatchSize, 8)
    XCTAssertEqual(c.gradientAccumulationSteps, 4); XCTAssertEqual(c.lrSchedulerType, "cosine")
    XCTAssertEqual(c.maxSteps, 100); XCTAssertEqual(c.seed, 3)
    XCTAssertEqual(c.maxGradNorm, TrainingConfig().maxGradNorm)
    XCTAssertNoThrow(try c.validate())
    let back = try JSONDecoder().decode(TrainingConfig.self, from: try JSONEncoder().encode(c))
    XCTAssertEqual(back, c)

    var bad = c
    bad.gradientAccumulationSteps = 0
    XCTAssertThrowsError(try bad.validate()) { XCTAssertTrue("\($0)".contains("gradient_accumulation_steps"), "\($0)") }
    bad = c
    bad.lrSchedulerType = "cosine_warm"
    XCTAssertThrowsError(try bad.validate())
    // The fingerprint ignores logging/saving settings but not the numbers of a step.
    var logging = c
    logging.loggingSteps = 7; logging.saveSteps = 9
    XCTAssertEqual(logging.fingerprint, c.fingerprint)
    var lr = c
    lr.learningRate = 0.002
    XCTAssertNotEqual(lr.fingerprint, c.fingerprint)
    // Run length matters to a decaying schedule, not to a constant one (a run can be extended).
    var longer = c
    longer.maxSteps = c.maxSteps + 10
    XCTAssertNotEqual(longer.fingerprint, c.fingerprint, "linear decay depends on the length")
    var constant = c, constantLonger = c
    constant.lrSchedulerType = "constant"; constantLonger.lrSchedulerType = "constant"
    constant.warmupRatio = 0; constantLonger.warmupRatio = 0
    constant.warmupSteps = 3; constantLonger.warmupSteps = 3
    constantLonger.maxSteps = c.maxSteps + 10
    XCTAssertEqual(constantLonger.fingerprint, constant.fingerprint)
    constantLonger.warmupRatio = 0.1; constant.warmupRatio = 0.1
    XCTAssertNotEqual(constantLonger.fingerprint, constant.fingerprint, "a warmup ratio depends on the length")
  }

  func test_noTrainedTargets_throws() throws {
    let task = try Tiny.fullTask(on: TestBackends.cpu)
    let masked = TokenizedExample(inputIds: [1, 2, 3], targets: [-100, -100, -100])
    XCTAssertThrowsError(try Trainer(task: task, config: Tiny.config(), train: [masked])) {
      XCTAssertTrue("\($0)".contains("no training data"), "\($0)")
    }
    let ragged = TokenizedExample(inputIds: [1, 2, 3], targets: [2, 3])
    XCTAssertThrowsError(try Trainer(task: task, config: Tiny.config(), train: try Tiny.examples(2, seed: 1),
                                     validation: [ragged])) {
      XCTAssertTrue("\($0)".contains("validation example 0 has 3 ids but 2 targets"), "\($0)")
    }
  }
}
