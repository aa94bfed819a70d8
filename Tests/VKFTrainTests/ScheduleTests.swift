import Foundation
import XCTest
@testable import VKFTrain

/// Golden tests: every step of every schedule against transformers + torch LambdaLR,
/// recorded by tools/make_schedule_fixtures.py into Fixtures/schedules.json.
final class ScheduleTests: XCTestCase {
  /// Relative tolerance per step. The multiplier is computed in f64 with transformers'
  /// operation order (so it matches Python to ~1e-16) and rounded once to f32 (≤ 6e-8
  /// relative); 1e-6 leaves headroom for libm differences without hiding a formula error.
  static let relativeTolerance: Float = 1e-6
  /// Absolute floor for expected values near 0 (e.g. the end of a decay, ~1e-8 × lr): f64
  /// cancellation there is ~1e-16 × lr; 1e-12 is 5e-9 of the 2e-4 base learning rate.
  static let absoluteTolerance: Float = 1e-12

  struct Fixture: Decodable {
    struct Case: Decodable {
      let name: String
      let config: LRSchedule
      let lrs: [Double]
    }
    let source: String
    let cases: [Case]
  }

  static func loadFixture() throws -> Fixture {
    let url = try XCTUnwrap(Bundle.module.url(forResource: "schedules", withExtension: "json", subdirectory: "Fixtures"))
    return try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
  }

  func testEveryStep_matchesTransformers() throws {
    let fixture = try Self.loadFixture()
    XCTAssertGreaterThanOrEqual(fixture.cases.count, 30)
    var covered = Set<String>()
    for c in fixture.cases {
      covered.insert(c.config.lrSchedulerType)
      XCTAssertEqual(c.lrs.count, c.config.numTrainingSteps + 1, c.name)
      for (step, expected) in c.lrs.enumerated() {
        let want = Float(expected)
        let got = c.config.learningRate(step: step)
        let tol = max(Self.relativeTolerance * abs(want), Self.absoluteTolerance)
        XCTAssertEqual(got, want, accuracy: tol, "\(c.name) step \(step)")
      }
    }
    XCTAssertEqual(covered, Set(LRSchedule.supportedTypes), "fixture must cover every schedule")
  }

  func testWarmupRatio_roundsUpLikeTransformers() throws {
    XCTAssertEqual(try LRSchedule(lrSchedulerType: "linear", warmupRatio: 0.1, numTrainingSteps: 100).resolvedWarmupSteps, 10)
    XCTAssertEqual(try LRSchedule(lrSchedulerType: "linear", warmupRatio: 0.1, numTrainingSteps: 95).resolvedWarmupSteps, 10)
    XCTAssertEqual(try LRSchedule(lrSchedulerType: "linear", warmupSteps: 0.03, numTrainingSteps: 1000).resolvedWarmupSteps, 30)
    XCTAssertEqual(try LRSchedule(lrSchedulerType: "linear", warmupSteps: 12.9, numTrainingSteps: 100).resolvedWarmupSteps, 12)
    // warmup_steps wins over warmup_ratio, as in transformers 4.
    XCTAssertEqual(try LRSchedule(warmupSteps: 5, warmupRatio: 0.5, numTrainingSteps: 100).resolvedWarmupSteps, 5)
  }

  func testUnknownName_errorListsEverySupportedName() throws {
    let json = Data(#"{"lr_scheduler_type": "cosine_annealing", "num_training_steps": 10}"#.utf8)
    XCTAssertThrowsError(try JSONDecoder().decode(LRSchedule.self, from: json)) { error in
      guard let e = error as? LRScheduleError else { return XCTFail("wrong error type: \(error)") }
      XCTAssertEqual(e, .unknownSchedulerType("cosine_annealing", supported: LRSchedule.supportedTypes))
      for name in LRSchedule.supportedTypes { XCTAssertTrue(e.description.contains(name), name) }
      XCTAssertTrue(e.description.contains("cosine_annealing"))
    }
    XCTAssertEqual(LRSchedule.supportedTypes.count, 9)
  }

  func testKwargNotTakenBySchedule_isRejectedByName() throws {
    let json = Data(#"{"lr_scheduler_type": "linear", "num_training_steps": 10, "lr_scheduler_kwargs": {"num_cycles": 2, "typo_key": 1}}"#.utf8)
    XCTAssertThrowsError(try JSONDecoder().decode(LRSchedule.self, from: json)) { error in
      XCTAssertEqual(error as? LRScheduleError,
                     .unexpectedKwargs(["num_cycles", "typo_key"], schedulerType: "linear", accepted: []))
    }
  }

  func testMissingOrConflictingKwargs_throw() {
    XCTAssertThrowsError(try LRSchedule(lrSchedulerType: "cosine_with_min_lr", numTrainingSteps: 10)) {
      guard case .missingKwarg("min_lr", "cosine_with_min_lr", _)? = $0 as? LRScheduleError else { return XCTFail("\($0)") }
    }
    XCTAssertThrowsError(try LRSchedule(lrSchedulerType: "cosine_with_min_lr", numTrainingSteps: 10,
                                        lrSchedulerKwargs: .init(minLr: 1e-6, minLrRate: 0.1))) {
      XCTAssertEqual($0 as? LRScheduleError, .conflictingKwargs("min_lr", "min_lr_rate", schedulerType: "cosine_with_min_lr"))
    }
    XCTAssertThrowsError(try LRSchedule(lrSchedulerType: "warmup_stable_decay", numTrainingSteps: 10)) {
      guard case .missingKwarg("num_decay_steps", _, _)? = $0 as? LRScheduleError else { return XCTFail("\($0)") }
    }
    XCTAssertThrowsError(try LRSchedule(lrSchedulerType: "warmup_stable_decay", numTrainingSteps: 10,
                                        lrSchedulerKwargs: .init(numDecaySteps: 5, decayType: "exp"))) {
      guard case .invalidValue(field: "lr_scheduler_kwargs.decay_type", _, _)? = $0 as? LRScheduleError else { return XCTFail("\($0)") }
    }
    XCTAssertThrowsError(try LRSchedule(lrSchedulerType: "polynomial", learningRate: 1e-7, numTrainingSteps: 10)) {
      guard case .invalidValue(field: "lr_scheduler_kwargs.lr_end", _, _)? = $0 as? LRScheduleError else { return XCTFail("\($0)") }
    }
  }

  func testConfig_roundTripsThroughJSON() throws {
    let schedule = try LRSchedule(lrSchedulerType: "warmup_stable_decay", learningRate: 3e-4, warmupSteps: 10,
                                  numTrainingSteps: 100, lrSchedulerKwargs: .init(numDecaySteps: 20, decayType: "1-sqrt"))
    let data = try JSONEncoder().encode(schedule)
    XCTAssertEqual(try JSONDecoder().decode(LRSchedule.self, from: data), schedule)
    let text = String(decoding: data, as: UTF8.self)
    for key in ["lr_scheduler_type", "learning_rate", "warmup_steps", "num_training_steps", "num_decay_steps", "decay_type"] {
      XCTAssertTrue(text.contains("\"\(key)\""), key)
    }
  }

  func testDefaults_matchTransformers() throws {
    let s = try JSONDecoder().decode(LRSchedule.self, from: Data(#"{"num_training_steps": 4}"#.utf8))
    XCTAssertEqual(s.lrSchedulerType, "linear")
    XCTAssertEqual(s.learningRate, 5e-5)
    XCTAssertEqual(s.resolvedWarmupSteps, 0)
    XCTAssertEqual(s.multiplier(step: -3), 1)  // negative steps read as step 0
    XCTAssertEqual(s.multiplier(step: 2), 0.5)
  }
}
