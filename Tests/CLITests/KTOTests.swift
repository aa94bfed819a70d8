import Foundation
import XCTest

/// `train --objective kto` on the shared SmolLM2 (CPU, 2 steps): hh-rlhf pairs split into
/// desirable and undesirable answers, and TRL's unpaired {prompt, completion, label} records.
final class KTOTests: XCTestCase {
  func test_kto_lora_onPairsAndUnpairedRecords_logsTRLsValues() throws {
    let made = try PreferenceRuns.shared()
    let out = made.dir.appendingPathComponent("kto")
    let r = try CLITests.run(PreferenceRuns.common("kto", model: made.model, data: made.train)
      + ["--output", out.path, "--max-steps", "2", "--desirable-weight", "1.33"])
    XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
    XCTAssertTrue(r.stdout.contains("KTO: kto loss, beta 0.1, desirable_weight 1.33"), r.stdout)
    XCTAssertTrue(r.stdout.contains("12 training examples (6 desirable, 6 undesirable)"), r.stdout)
    let steps = try TrainedRun.metrics(out).filter { $0["loss"] != nil }
    XCTAssertEqual(steps.count, 2)
    // A side absent from a step's batch logs nothing for it (TRL: NaN, dropped).
    for key in ["rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected"] {
      XCTAssertTrue(steps.contains { $0[key] is Double }, "\(key) never logged: \(steps)")
    }
    for s in steps {
      XCTAssertGreaterThanOrEqual(try XCTUnwrap(s["kl"] as? Double), 0, "the KL estimate is clamped at 0")
    }

    // Unpaired records; a record without a label is named.
    let unpaired = made.dir.appendingPathComponent("kto.jsonl")
    try [#"{"prompt": "Say hi.", "completion": "Hi!", "label": true}"#,
         #"{"prompt": "Say hi.", "completion": "No.", "label": false}"#,
         #"{"prompt": [{"role": "user", "content": "Name a colour."}], "completion": "Blue.", "label": true}"#,
         #"{"prompt": "Name a colour.", "completion": "I will not.", "label": false}"#]
      .joined(separator: "\n").write(to: unpaired, atomically: true, encoding: .utf8)
    let u = try CLITests.run(PreferenceRuns.common("kto", model: made.model, data: unpaired)
      + ["--output", made.dir.appendingPathComponent("kto-unpaired").path, "--max-steps", "1"])
    XCTAssertEqual(u.status, 0, u.stderr + u.stdout)
    XCTAssertTrue(u.stdout.contains("4 training examples (2 desirable, 2 undesirable)"), u.stdout)
    let bad = made.dir.appendingPathComponent("kto-bad.jsonl")
    try #"{"prompt": "Say hi.", "completion": "Hi!"}"#.write(to: bad, atomically: true, encoding: .utf8)
    let b = try CLITests.run(PreferenceRuns.common("kto", model: made.model, data: bad)
      + ["--output", made.dir.appendingPathComponent("kto-bad").path, "--max-steps", "1"])
    XCTAssertNotEqual(b.status, 0)
    XCTAssertTrue(b.stderr.contains("without a boolean \"label\""), b.stderr)
    let full = try CLITests.run(PreferenceRuns.common("kto", model: made.model, data: unpaired)
      + ["--output", made.dir.appendingPathComponent("kto-full").path, "--method", "full", "--dry-run"])
    XCTAssertNotEqual(full.status, 0)
    XCTAssertTrue(full.stderr.contains("KTO trains an adapter here"), full.stderr)
  }
}
