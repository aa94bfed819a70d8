import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport
@testable import VKFTrain

/// fp16's dynamic loss scale: the scale trajectory equals torch.amp.GradScaler's on planted
/// overflow sequences (fixture by tools/make_gradscaler_fixture.py); in the trainer a step with
/// inf/NaN gradients is skipped — parameters, moments and step count untouched — and the run
/// goes on; and scaling by the (power-of-two) scale changes no bit of an f32 run.
final class GradScalerTests: XCTestCase {
  private struct Fixture: Decodable {
    struct Case: Decodable {
      struct Options: Decodable {
        var init_scale: Double?, growth_factor: Double?, backoff_factor: Double?, growth_interval: Int?
      }
      var options: Options
      var steps: Int
      var overflow: [Int]
      var stepped: [Bool]
      var scales: [Double]
    }
    var cases: [Case]
  }

  func test_scaleTrajectory_equalsTorchGradScaler() throws {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("Fixtures/gradscaler.json")
    let fixture = try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
    XCTAssertEqual(fixture.cases.count, 2)
    for c in fixture.cases {
      let o = c.options
      var s = GradScaler(initScale: o.init_scale ?? 65536, growthFactor: o.growth_factor ?? 2,
                         backoffFactor: o.backoff_factor ?? 0.5, growthInterval: o.growth_interval ?? 2000)
      let overflow = Set(c.overflow)
      for step in 1...c.steps {
        XCTAssertEqual(!overflow.contains(step), c.stepped[step - 1])
        s.update(foundInf: overflow.contains(step))
        XCTAssertEqual(s.scale, c.scales[step - 1], "step \(step) of \(c.steps), overflow at \(c.overflow)")
        if s.scale != c.scales[step - 1] { break }
      }
    }
    XCTAssertEqual(GradScaler(), GradScaler(initScale: 65536, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000),
                   "torch's defaults")
  }

  /// Steps 1–8, two micro-batches each; micro-batch 4 (step 3) gets NaN gradients.
  private func fp16Run(replayed: Bool, on backend: Backend, inject: Bool, fp16: Bool = true)
    throws -> (trainer: Trainer, dir: URL, task: TrainingTask) {
    let dir = try Tiny.temporaryDirectory("fp16")
    var c = Tiny.config(steps: 8)
    c.saveSteps = 1
    c.fp16 = fp16
    let task: TrainingTask
    if replayed {
      let t = StagedScriptedTask(try Tiny.fullTask(on: backend))
      if inject { t.inject[4] = .nanGradient }
      task = t
    } else {
      let t = ScriptedTask(try Tiny.fullTask(on: backend))
      if inject { t.inject[4] = .nanGradient }
      task = t
    }
    let trainer = try Trainer(task: task, config: c, train: try Tiny.examples(12, seed: 8), outputDirectory: dir)
    var events: [TrainingEvent] = []
    trainer.onEvent = { events.append($0) }
    try trainer.train()
    let skips = events.compactMap { e -> Int? in if case .stepSkipped(let s, _, _) = e { return s }; return nil }
    XCTAssertEqual(skips, trainer.skippedSteps, "one event per skipped step")
    return (trainer, dir, task)
  }

  private func checkSkip(replayed: Bool, on backend: Backend) throws {
    let (trainer, dir, task) = try fp16Run(replayed: replayed, on: backend, inject: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    XCTAssertEqual(replayed, trainer.replayedSteps != nil)
    XCTAssertEqual(trainer.step, 8, "the run goes on")
    XCTAssertEqual(trainer.skippedSteps, [3])
    XCTAssertEqual(trainer.gradScaler?.scale, 32768, "backed off once")
    XCTAssertEqual(trainer.optimizer.step, 7, "the skipped update is not counted")
    func saved(_ step: Int) throws -> SafetensorsFile {
      try SafetensorsFile(contentsOf: dir.appendingPathComponent("checkpoint-\(step)/trainables.safetensors"))
    }
    var moved = false
    for t in task.trainableTensors {
      XCTAssertEqual(try saved(3).floats(t.name), try saved(2).floats(t.name), "step 3 changed nothing: \(t.name)")
      let after = try saved(4).floats(t.name), before = try saved(3).floats(t.name)
      moved = moved || after != before
      XCTAssertTrue(try backend.floats(t.value).allSatisfy(\.isFinite), t.name)
    }
    XCTAssertTrue(moved, "step 4 updates again")
    let state = try String(contentsOf: dir.appendingPathComponent("checkpoint-8/trainer_state.json"), encoding: .utf8)
    XCTAssertTrue(state.contains("\"loss_scaler\""), state)
  }

  func test_nanStep_skippedAndRunGoesOn_eager() throws { try checkSkip(replayed: false, on: TestBackends.cpu) }

  func test_nanStep_skippedAndRunGoesOn_replayed_cpu() throws { try checkSkip(replayed: true, on: TestBackends.cpu) }

  func test_nanStep_skippedAndRunGoesOn_replayed_vulkan() throws {
    try checkSkip(replayed: true, on: try Tiny.vulkanOrSkip())
  }

  /// Loss × 2¹⁶ then gradients ÷ 2¹⁶ are exact in f32: the fp16 run's parameters equal the
  /// unscaled run's bit for bit (eager and replayed).
  func test_scaling_changesNoBit() throws {
    for replayed in [false, true] {
      let scaled = try fp16Run(replayed: replayed, on: TestBackends.cpu, inject: false)
      let plain = try fp16Run(replayed: replayed, on: TestBackends.cpu, inject: false, fp16: false)
      defer { try? FileManager.default.removeItem(at: scaled.dir); try? FileManager.default.removeItem(at: plain.dir) }
      XCTAssertEqual(scaled.trainer.gradScaler?.scale, 65536)
      XCTAssertNil(plain.trainer.gradScaler)
      for (a, b) in zip(scaled.task.trainableTensors, plain.task.trainableTensors) {
        XCTAssertEqual(try TestBackends.cpu.floats(a.value), try TestBackends.cpu.floats(b.value),
                       "\(a.name), replayed \(replayed)")
      }
    }
  }

  /// The scale is really applied: started at 2⁷⁰, Σ(grad × scale)² overflows f32 and the
  /// first steps are skipped, each halving the scale, until it fits — then training runs
  /// (torch's GradScaler finds its level the same way).
  func test_hugeInitialScale_backsOffUntilGradientsFit() throws {
    for replayed in [false, true] {
      let dir = try Tiny.temporaryDirectory("fp16-huge")
      defer { try? FileManager.default.removeItem(at: dir) }
      var c = Tiny.config(steps: 16)
      c.fp16 = true
      let task: TrainingTask = replayed ? StagedScriptedTask(try Tiny.fullTask(on: TestBackends.cpu))
        : try Tiny.fullTask(on: TestBackends.cpu)
      let trainer = try Trainer(task: task, config: c, train: try Tiny.examples(12, seed: 8), outputDirectory: dir)
      trainer.gradScaler = GradScaler(initScale: 0x1p70)
      try trainer.train()
      let skipped = trainer.skippedSteps
      XCTAssertFalse(skipped.isEmpty, "replayed \(replayed)")
      XCTAssertEqual(skipped, Array(1...skipped.count), "the first steps, in a row")
      XCTAssertLessThan(skipped.count, 12, "then it trains")
      XCTAssertEqual(trainer.gradScaler?.scale, 0x1p70 * pow(0.5, Double(skipped.count)))
      XCTAssertEqual(trainer.optimizer.step, 16 - skipped.count)
      for t in task.trainableTensors { XCTAssertTrue(try TestBackends.cpu.floats(t.value).allSatisfy(\.isFinite)) }
    }
  }
}
