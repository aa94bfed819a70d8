import Foundation
import XCTest

/// `generate --prompts F --output O` on the shared SmolLM2: answers in the file's order with
/// the records' fields kept, each greedy answer equal to `generate --prompt`'s for that
/// prompt alone; bad files and flags get one-line errors naming the file, line or flag.
final class GenerateBatchedTests: XCTestCase {
  private static func directory(_ name: String) throws -> URL {
    try SharedTemporaryDirectories.make(FileManager.default.temporaryDirectory
      .appendingPathComponent("vkf-\(name)-\(UUID().uuidString)"))
  }

  func test_promptsFile_answersInOrder_equalToOnePromptRuns() throws {
    let model = try TrainedRun.modelDirectory()
    let dir = try Self.directory("generate-batched")
    let prompts = dir.appendingPathComponent("prompts.jsonl"), out = dir.appendingPathComponent("answers.jsonl")
    let texts = ["Name a colour.", "What is 2 + 3? Answer with a number only.", "Say hi."]
    let lines = [
      #"{"id": 7, "prompt": "\#(texts[0])"}"#,
      #"{"id": 8, "prompt": "\#(texts[1])"}"#,
      "",
      #"{"id": 9, "messages": [{"role": "user", "content": "\#(texts[2])"}]}"#,
    ]
    try lines.joined(separator: "\n").write(to: prompts, atomically: true, encoding: .utf8)
    let common = ["--cpu", "--model", model, "--chat", "--max-new-tokens", "6"]
    let r = try CLITests.run(["generate"] + common + ["--prompts", prompts.path, "--output", out.path, "--batch-size", "2"])
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertTrue(r.stderr.contains("batch 2/2"), r.stderr)
    let answers = try String(contentsOf: out, encoding: .utf8).split(separator: "\n").map {
      try XCTUnwrap(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
    }
    XCTAssertEqual(answers.map { $0["id"] as? Int }, [7, 8, 9])
    // One model load per comparison is slow in a debug build: the messages record (rendered
    // like --chat --prompt, sorted into the other batch than the first).
    for i in [2] {
      let a = answers[i]
      let one = try CLITests.run(["generate"] + common + ["--prompt", texts[i]])
      XCTAssertEqual(one.status, 0, one.stderr)
      XCTAssertEqual(a["completion"] as? String, String(one.stdout.dropLast()), "prompt \(i)")  // stdout ends in "\n"
      XCTAssertNotNil(a["completion_tokens"] as? Int)
      XCTAssertNotNil(a["stop_reason"] as? String)
      XCTAssertNil(a["sample"], "one sample per prompt: no sample index")
    }
    // Sampled, two answers per prompt: two lines each, sample 0 and 1.
    let sampled = try CLITests.run(["generate"] + common + ["--prompts", prompts.path, "--output", out.path,
                                                            "--num-return-sequences", "2", "--temperature", "0.8", "--seed", "3"])
    XCTAssertEqual(sampled.status, 0, sampled.stderr)
    let two = try String(contentsOf: out, encoding: .utf8).split(separator: "\n").map {
      try XCTUnwrap(try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
    }
    XCTAssertEqual(two.map { $0["id"] as? Int }, [7, 7, 8, 8, 9, 9])
    XCTAssertEqual(two.map { $0["sample"] as? Int }, [0, 1, 0, 1, 0, 1])
  }

  func test_badPromptsFilesAndFlags_failWithOneLineNamingThem() throws {
    let model = try TrainedRun.modelDirectory()
    let dir = try Self.directory("generate-batched-bad")
    let out = dir.appendingPathComponent("answers.jsonl")
    try "keep me".write(to: out, atomically: true, encoding: .utf8)
    func file(_ name: String, _ text: String) throws -> String {
      let u = dir.appendingPathComponent(name)
      try text.write(to: u, atomically: true, encoding: .utf8)
      return u.path
    }
    let noPrompt = try file("no-prompt.jsonl", "{\"prompt\": \"hi\"}\n{\"question\": \"hi\"}\n")
    let notJSON = try file("not-json.jsonl", "{\"prompt\": \"hi\"}\n\n[1, 2\n")
    let badMessages = try file("bad-messages.jsonl", "{\"messages\": [{\"role\": \"user\"}]}\n")
    let cases: [([String], String)] = [
      (["--prompts", noPrompt, "--output", out.path], "no-prompt.jsonl line 2: no \"prompt\" string"),
      (["--prompts", notJSON, "--output", out.path], "not-json.jsonl line 3: not a JSON object"),
      (["--prompts", badMessages, "--output", out.path, "--chat"], "line 1: messages[0] needs"),
      (["--prompts", noPrompt], "--prompts needs --output"),
      (["--prompt", "hi", "--output", out.path], "--output needs --prompts"),
      (["--prompt", "hi", "--prompts", noPrompt, "--output", out.path], "exclude each other"),
      ([], "pass --prompt TEXT or --prompts"),
      (["--prompts", noPrompt, "--output", "/nonexistent/dir/a.jsonl"], "no such directory /nonexistent/dir"),
      (["--prompts", noPrompt, "--output", out.path, "--batch-size", "0"], "--batch-size must be ≥ 1"),
    ]
    for (args, message) in cases {
      let r = try CLITests.run(["generate", "--cpu", "--model", model, "--max-new-tokens", "2"] + args)
      XCTAssertNotEqual(r.status, 0, "\(args)")
      XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
      XCTAssertFalse(r.stderr.contains("Fatal error"), r.stderr)
    }
    XCTAssertEqual(try String(contentsOf: out, encoding: .utf8), "keep me", "a failed run leaves the output alone")
  }
}
