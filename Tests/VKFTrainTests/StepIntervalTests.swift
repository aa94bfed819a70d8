import Foundation
import VKFCore
import VKFTestSupport
import XCTest
@testable import VKFTrain

/// transformers' readings of `eval_steps` / `save_steps` / `logging_steps` (a count, or a
/// fraction of the run rounded up) and of a fractional `num_train_epochs`.
final class StepIntervalTests: XCTestCase {
  func test_countsAndFractions_resolveAsTransformers() {
    // math.ceil(max_steps * value) for value < 1; whole counts as given; 0 stays "not by steps".
    XCTAssertEqual(StepInterval.steps(0.25, totalSteps: 9), 3)
    XCTAssertEqual(StepInterval.steps(0.4, totalSteps: 9), 4)
    XCTAssertEqual(StepInterval.steps(0.001, totalSteps: 9), 1)
    XCTAssertEqual(StepInterval.steps(0.5, totalSteps: 10), 5)
    XCTAssertEqual(StepInterval.steps(1, totalSteps: 9), 1)
    XCTAssertEqual(StepInterval.steps(50, totalSteps: 9), 50)
    XCTAssertEqual(StepInterval.steps(0, totalSteps: 9), 0)
    XCTAssertNil(StepInterval.problem(0.25))
    XCTAssertNil(StepInterval.problem(12))
    XCTAssertNil(StepInterval.problem(0))
    for bad in [-1, 2.5, .nan, .infinity, 1e300] { XCTAssertNotNil(StepInterval.problem(bad), "\(bad)") }
    XCTAssertEqual(StepInterval.describe("eval_steps", 0.25, totalSteps: 9), "every 3 steps (eval_steps 0.25 of 9)")
    XCTAssertEqual(StepInterval.describe("logging_steps", 1, totalSteps: 9), "every step")
    XCTAssertNil(StepInterval.describe("save_steps", 0, totalSteps: 9))
  }

  func test_config_refusesBadIntervalsAndEpochs() {
    for (field, edit) in [("eval_steps", { (c: inout TrainingConfig) in c.evalSteps = 2.5 }),
                          ("save_steps", { $0.saveSteps = -1 }), ("logging_steps", { $0.loggingSteps = 0 }),
                          ("num_train_epochs", { $0.numTrainEpochs = 0 })] {
      var c = Tiny.config()
      edit(&c)
      XCTAssertThrowsError(try c.validate(), field) { error in
        XCTAssertTrue("\(error)".contains(field), "\(error)")
      }
    }
  }

  /// 12 examples in micro-batches of 2 are 6 steps an epoch: 1.5 epochs are 6 + ⌈0.5 × 6⌉ = 9
  /// steps; eval_steps 0.25 → every 3, save_steps 0.5 → every 5, logging_steps 0.4 → every 4
  /// (and the last step).
  func test_fractionalEpochsAndIntervals_throughTheTrainer() throws {
    let task = try Tiny.fullTask(on: TestBackends.cpu)
    var c = Tiny.config(micro: 2, accumulation: 1)
    c.numTrainEpochs = 1.5
    c.evalSteps = 0.25; c.saveSteps = 0.5; c.loggingSteps = 0.4
    let dir = try Tiny.temporaryDirectory("fractions")
    defer { try? FileManager.default.removeItem(at: dir) }
    let trainer = try Trainer(task: task, config: c, train: try Tiny.examples(12, seed: 3),
                              validation: try Tiny.examples(2, seed: 4), outputDirectory: dir)
    XCTAssertEqual(trainer.totalSteps, 9)
    XCTAssertEqual([trainer.evalInterval, trainer.saveInterval, trainer.logInterval], [3, 5, 4])
    var logged: [Int] = [], evaluated: [Int] = [], saved: [String] = []
    trainer.onEvent = { e in
      switch e {
      case .progress(let p): logged.append(p.step)
      case .evaluation(let r): evaluated.append(r.step)
      case .checkpointSaved(let url): saved.append(url.lastPathComponent)
      default: break
      }
    }
    try trainer.train()
    XCTAssertEqual(trainer.step, 9)
    XCTAssertEqual(logged, [4, 8, 9])
    XCTAssertEqual(evaluated, [3, 6, 9])
    XCTAssertEqual(saved, ["checkpoint-5"])

    // A tenth of an epoch is one step (rounded up), not zero.
    c.numTrainEpochs = 0.1; c.saveSteps = 0; c.evalSteps = 0
    let short = try Trainer(task: task, config: c, train: try Tiny.examples(12, seed: 3))
    XCTAssertEqual(short.totalSteps, 1)
  }
}
