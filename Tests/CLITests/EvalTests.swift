import Foundation
import XCTest

/// `vkfinetune eval`: loss and perplexity with the same masking and batches as training.
final class EvalTests: XCTestCase {
  /// Same batches, kernels and adapter values (f32 in the file) as the trainer's evaluation:
  /// only the decimal round trip of metrics.jsonl and --json separates the two numbers.
  static let sameComputationTolerance = 1e-9

  /// `eval --json` → loss.
  static func loss(_ args: [String], json: URL) throws -> (CLITests.Run, Double?) {
    let r = try CLITests.run(["eval", "--cpu", "--max-seq-length", TrainedRun.maxSeqLength,
                              "--batch-size", TrainedRun.batchSize, "--json", json.path] + args)
    guard r.status == 0 else { return (r, nil) }
    let report = try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as? [String: Any]
    return (r, report?["loss"] as? Double)
  }

  func test_eval_withAdapter_printsTheLossTheTrainerLogged() throws {
    let made = try TrainedRun.shared()
    XCTAssertEqual(made.run.status, 0, made.run.stderr)
    let logged = try XCTUnwrap(TrainedRun.metrics(made.output).compactMap { $0["eval_loss"] as? Double }.last)
    let (r, loss) = try Self.loss(["--model", made.model, "--adapter", made.output.path, "--data", made.validation.path],
                                  json: made.dir.appendingPathComponent("eval.json"))
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertNotNil(r.stdout.range(of: #"eval loss \d+\.\d{4} \| ppl \d+\.\d{2}"#, options: .regularExpression), r.stdout)
    XCTAssertEqual(try XCTUnwrap(loss), logged, accuracy: Self.sameComputationTolerance)
  }

  func test_eval_adapterChangesTheLoss() throws {
    let made = try TrainedRun.shared()
    let (_, base) = try Self.loss(["--model", made.model, "--data", made.validation.path],
                                  json: made.dir.appendingPathComponent("eval-base.json"))
    let (_, adapted) = try Self.loss(["--model", made.model, "--adapter", made.output.path, "--data", made.validation.path],
                                     json: made.dir.appendingPathComponent("eval-adapted.json"))
    XCTAssertNotEqual(try XCTUnwrap(base), try XCTUnwrap(adapted), "two trained steps moved the validation loss")
  }

  func test_eval_badInput_oneLine() throws {
    let made = try TrainedRun.shared()
    for args in [["--model", made.model, "--data", "/nonexistent.json"],
                 ["--model", made.model, "--data", made.validation.path, "--adapter", "/nonexistent-adapter"],
                 ["--model", made.model, "--data", made.validation.path, "--adapter", made.dir.path],
                 ["--model", made.model, "--data", made.validation.path, "--batch-size", "0"]] {
      let r = try CLITests.run(["eval", "--cpu"] + args)
      XCTAssertNotEqual(r.status, 0, "\(args)")
      XCTAssertEqual(r.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }.count, 1, "\(args): \(r.stderr)")
      XCTAssertFalse(r.stderr.contains("Fatal error"), "\(args) trapped: \(r.stderr)")
    }
  }
}
