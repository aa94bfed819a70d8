import Foundation
import XCTest

/// `train --objective ppo` on the shared SmolLM2 (CPU, 1 step, one completion of ≤ 4 tokens per
/// prompt) scored by the reward adapter the preference runs trained: TRL's metrics in
/// metrics.jsonl, the adapter and value head written, and one-line errors for bad settings.
final class PPOTests: XCTestCase {
  func test_ppo_lora_rewardModel_logsTRLMetrics_writesValueHead() throws {
    let made = try PreferenceRuns.shared()
    XCTAssertEqual(made.rewardRun.status, 0, made.rewardRun.stderr)
    let train = made.dir.appendingPathComponent("ppo-train.jsonl"), eval = made.dir.appendingPathComponent("ppo-eval.jsonl")
    try GRPOTests.prompts(2, to: train)
    try GRPOTests.prompts(1, to: eval)
    let out = made.dir.appendingPathComponent("ppo")
    let r = try CLITests.run(["train", "--cpu", "--objective", "ppo", "--model", made.model, "--data", train.path,
                              "--eval-data", eval.path, "--output", out.path, "--batch-size", "2",
                              "--max-completion-length", "4", "--max-steps", "1", "--num-ppo-epochs", "1",
                              "--kl-coef", "0.1", "--reward-model", made.reward.path,
                              "--lora-target-modules", "q_proj,v_proj", "--learning-rate", "1e-4"])
    XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
    XCTAssertTrue(r.stdout.contains("PPO: one completion per prompt of ≤ 4 tokens (temperature 0.7), 1 epochs"), r.stdout)
    let steps = try TrainedRun.metrics(out).filter { $0["loss"] != nil }
    XCTAssertEqual(steps.count, 1)
    for s in steps {
      for key in ["objective/kl", "objective/scores", "objective/rlhf_reward", "objective/non_score_reward",
                  "policy/approxkl_avg", "policy/clipfrac_avg", "loss/policy_avg", "loss/value_avg", "val/clipfrac_avg",
                  "val/ratio", "completions/mean_length"] {
        XCTAssertNotNil(s[key] as? Double, "\(key) missing from \(s)")
      }
      let length = try XCTUnwrap(s["completions/mean_length"] as? Double)
      XCTAssertTrue((1...4).contains(length), "\(length)")
    }
    XCTAssertNotNil(try TrainedRun.metrics(out).last { $0["eval_loss"] != nil }, "evaluation: −mean score")
    XCTAssertEqual(try PreferenceRuns.json(out.appendingPathComponent("adapter_config.json"))["task_type"] as? String,
                   "CAUSAL_LM")
    XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("value_head.safetensors").path))
  }

  func test_ppo_badSettings_oneLineNamingTheKey() throws {
    let model = try TrainedRun.modelDirectory()
    let dir = try SharedTemporaryDirectories.make(FileManager.default.temporaryDirectory
      .appendingPathComponent("vkf-ppo-bad-\(UUID().uuidString)"))
    let data = dir.appendingPathComponent("p.jsonl")
    try GRPOTests.prompts(2, to: data)
    let common = ["train", "--cpu", "--objective", "ppo", "--model", model, "--data", data.path, "--output",
                  dir.appendingPathComponent("out").path, "--batch-size", "2", "--dry-run"]
    let rm = ["--reward-model", dir.path]
    func recipe(_ body: String) throws -> [String] {
      let u = dir.appendingPathComponent("r\(UUID().uuidString).yaml")
      try body.write(to: u, atomically: true, encoding: .utf8)
      return ["--config", u.path]
    }
    let cases: [([String], String)] = [
      ([], "PPO needs reward_model"),
      (rm + ["--method", "full"], "method = full is invalid"),
      (rm + (try recipe("num_mini_batches: 3")), "num_mini_batches = 3 is invalid"),
      (rm + (try recipe("whiten_rewards: true")), "whiten_rewards = true is invalid"),
      (rm + (try recipe("kl_estimator: k2")), "kl_estimator must be one of k1, k3"),
      (rm + (try recipe("gamma: 1.5")), "gamma"),
      (rm + (try recipe("reward_functions: [valid_json]")), "reward_functions apply to GRPO"),
    ]
    for (args, message) in cases {
      let r = try CLITests.run(common + args)
      XCTAssertNotEqual(r.status, 0, "\(args)")
      XCTAssertTrue(r.stderr.contains(message), "\(args): \(r.stderr)")
      XCTAssertFalse(r.stderr.contains("Fatal error"), r.stderr)
    }
  }
}
