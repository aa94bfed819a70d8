import Foundation
import XCTest

/// `train --objective grpo` on the shared SmolLM2 (CPU, 2 steps, 2 completions of ≤ 4 tokens
/// per prompt): built-in reward functions from a recipe plus the reward adapter the preference
/// runs trained, TRL's metrics in metrics.jsonl, and one-line errors for bad reward configs.
final class GRPOTests: XCTestCase {
  static func prompts(_ count: Int, to url: URL, answerKey: String = "answer") throws {
    let lines = (0..<count).map { i in
      #"{"prompt": [{"role": "user", "content": "What is \#(i) + 2? Reply with the number."}], "\#(answerKey)": "\#(i + 2)"}"#
    }
    try lines.joined(separator: "\n").write(to: url, atomically: true, encoding: .utf8)
  }

  static let recipe = """
    objective: grpo
    reward_functions:
      - type: numeric_match
        column: answer
      - {type: regex, pattern: "^\\\\s*\\\\d+", name: starts_with_digit}
    reward_weights: [1.0, 0.5, 0.1]
    """

  func test_grpo_lora_rewardFunctionsAndRewardModel_logTRLMetrics() throws {
    let made = try PreferenceRuns.shared()
    XCTAssertEqual(made.rewardRun.status, 0, made.rewardRun.stderr)
    let train = made.dir.appendingPathComponent("grpo-train.jsonl"), eval = made.dir.appendingPathComponent("grpo-eval.jsonl")
    try Self.prompts(2, to: train)
    try Self.prompts(1, to: eval)
    let recipe = made.dir.appendingPathComponent("grpo.yaml")
    try Self.recipe.write(to: recipe, atomically: true, encoding: .utf8)
    let out = made.dir.appendingPathComponent("grpo")
    let r = try CLITests.run(["train", "--cpu", "--config", recipe.path, "--model", made.model, "--data", train.path,
                              "--eval-data", eval.path, "--output", out.path, "--num-generations", "2", "--batch-size", "2",
                              "--max-completion-length", "4", "--max-steps", "1", "--beta", "0.04",
                              "--reward-model", made.reward.path, "--lora-target-modules", "q_proj,v_proj",
                              "--learning-rate", "1e-4"])
    XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
    XCTAssertTrue(r.stdout.contains("GRPO: 2 completions per prompt"), r.stdout)
    XCTAssertTrue(r.stdout.contains("numeric_match × 1.0, starts_with_digit × 0.5, reward_model × 0.1"), r.stdout)
    let steps = try TrainedRun.metrics(out).filter { $0["loss"] != nil }
    XCTAssertEqual(steps.count, 1)
    for s in steps {
      for key in ["reward", "reward_std", "rewards/numeric_match/mean", "rewards/starts_with_digit/mean",
                  "rewards/reward_model/mean", "kl", "clip_ratio/region_mean", "completions/mean_length",
                  "frac_reward_zero_std"] {
        XCTAssertNotNil(s[key] as? Double, "\(key) missing from \(s)")
      }
      let length = try XCTUnwrap(s["completions/mean_length"] as? Double)
      XCTAssertTrue((1...4).contains(length), "\(length)")
    }
    XCTAssertNotNil(try TrainedRun.metrics(out).last { $0["eval_loss"] != nil }, "evaluation: −mean reward")
    XCTAssertEqual(try PreferenceRuns.json(out.appendingPathComponent("adapter_config.json"))["task_type"] as? String,
                   "CAUSAL_LM")
  }

  func test_grpo_badSettings_oneLineNamingTheKey() throws {
    let model = try TrainedRun.modelDirectory()
    let dir = try SharedTemporaryDirectories.make(FileManager.default.temporaryDirectory
      .appendingPathComponent("vkf-grpo-bad-\(UUID().uuidString)"))
    let data = dir.appendingPathComponent("p.jsonl")
    try Self.prompts(2, to: data, answerKey: "solution")
    func recipe(_ body: String) throws -> String {
      let u = dir.appendingPathComponent("r\(UUID().uuidString).yaml")
      try ("objective: grpo\n" + body).write(to: u, atomically: true, encoding: .utf8)
      return u.path
    }
    let common = ["train", "--cpu", "--model", model, "--data", data.path, "--output",
                  dir.appendingPathComponent("out").path, "--num-generations", "2", "--batch-size", "2"]
    let cases: [([String], String)] = [
      (["--config", try recipe("reward_functions: [{type: nope}]"), "--dry-run"],
       "reward_functions[0].type: unknown reward function \"nope\""),
      (["--config", try recipe("reward_functions: [{type: regex, pattern: \"(\"}]"), "--dry-run"],
       "reward_functions[0].pattern: invalid regular expression"),
      (["--config", try recipe("reward_functions: [valid_json]"), "--batch-size", "3", "--dry-run"],
       "per_device_train_batch_size = 3 is invalid"),
      (["--config", try recipe(""), "--dry-run"], "GRPO needs rewards"),
      (["--config", try recipe("reward_functions: [valid_json]\nnum_iterations: 0"), "--dry-run"], "num_iterations = 0"),
      (["--config", try recipe("reward_functions: [valid_json]\nloss_type: sigmoid"), "--dry-run"], "loss_type must be one of grpo"),
      (["--config", try recipe("reward_functions: [valid_json]\nreward_weights: [1, 2]"), "--dry-run"],
       "reward_weights has 2 weights for 1 reward functions"),
      (["--config", try recipe("reward_functions: [valid_json]"), "--method", "full", "--beta", "0.1", "--dry-run"],
       "full fine-tuning has no reference model"),
      (["--config", try recipe("reward_functions: [{type: numeric_match, column: answer}]"), "--max-steps", "1"],
       "reads the column \"answer\": record 1 of \(data.path) has no such field"),
    ]
    for (args, message) in cases {
      let r = try CLITests.run(common + args)
      XCTAssertNotEqual(r.status, 0, "\(args)")
      XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
      XCTAssertFalse(r.stderr.contains("Fatal error"), r.stderr)
    }
  }
}
