import Foundation
import XCTest

/// `generate --adapter` applies a trained PEFT adapter: greedy output equals the merged
/// model's (same weights up to f32 rounding of W + s·B·A).
final class GenerateAdapterTests: XCTestCase {
  func test_generateWithAdapter_equalsMergedModel() throws {
    let made = try TrainedRun.shared()
    let merged = made.dir.appendingPathComponent("merged-for-generate")
    let m = try CLITests.run(["merge", "--cpu", "--model", made.model, "--adapter", made.output.path,
                              "--output", merged.path])
    XCTAssertEqual(m.status, 0, m.stderr)
    let args = ["--chat", "--prompt", "Name a colour.", "--max-new-tokens", "6", "--temperature", "0"]
    let adapted = try CLITests.run(["generate", "--cpu", "--model", made.model, "--adapter", made.output.path] + args)
    XCTAssertEqual(adapted.status, 0, adapted.stderr)
    let mergedRun = try CLITests.run(["generate", "--cpu", "--model", merged.path] + args)
    XCTAssertEqual(mergedRun.status, 0, mergedRun.stderr)
    XCTAssertFalse(adapted.stdout.isEmpty)
    XCTAssertEqual(adapted.stdout, mergedRun.stdout)
    let missing = try CLITests.run(["generate", "--cpu", "--model", made.model, "--adapter", "/nonexistent/adapter"] + args)
    XCTAssertNotEqual(missing.status, 0)
    XCTAssertTrue(missing.stderr.contains("--adapter"), missing.stderr)
  }
}
