import Foundation
import XCTest

/// `vkfinetune merge`: the merged model evaluates like base + adapter.
final class MergeTests: XCTestCase {
  /// W + s·B·A rounded once to f32 versus y = W x + s·B(A x) summed in f32: per-logit
  /// differences of ~1e-6 relative, which move a mean loss of ~2.6 by far less than this.
  static let mergedLossTolerance = 1e-4

  func test_merge_writesHFDirectoryThatEvaluatesLikeBasePlusAdapter() throws {
    let made = try TrainedRun.shared()
    XCTAssertEqual(made.run.status, 0, made.run.stderr)
    let merged = made.dir.appendingPathComponent("merged")
    let r = try CLITests.run(["merge", "--cpu", "--model", made.model, "--adapter", made.output.path,
                              "--output", merged.path])
    XCTAssertEqual(r.status, 0, r.stderr)
    for file in ["model.safetensors", "config.json", "tokenizer.json"] {
      XCTAssertTrue(FileManager.default.fileExists(atPath: merged.appendingPathComponent(file).path), "missing \(file)")
    }
    let (_, viaAdapter) = try EvalTests.loss(["--model", made.model, "--adapter", made.output.path,
                                              "--data", made.validation.path],
                                             json: made.dir.appendingPathComponent("merge-a.json"))
    let (re, viaMerged) = try EvalTests.loss(["--model", merged.path, "--data", made.validation.path],
                                             json: made.dir.appendingPathComponent("merge-m.json"))
    XCTAssertEqual(re.status, 0, re.stderr)
    XCTAssertEqual(try XCTUnwrap(viaMerged), try XCTUnwrap(viaAdapter), accuracy: Self.mergedLossTolerance)

    // A second merge into the same directory is refused without --overwrite.
    let again = try CLITests.run(["merge", "--cpu", "--model", made.model, "--adapter", made.output.path,
                                  "--output", merged.path])
    XCTAssertNotEqual(again.status, 0)
    XCTAssertTrue(again.stderr.contains("not empty"), again.stderr)
  }
}
