// The built-in GRPO reward functions and their configuration errors.
import XCTest
@testable import VKFTrain

final class GRPORewardTests: XCTestCase {
  private func make(_ options: [String: String], max: Int = 64) throws -> RewardFunction {
    try BuiltinRewards.make("reward_functions[0]", options, maxCompletionLength: max)
  }
  private func input(_ completion: String, tokens: Int = 5, _ fields: [String: String] = ["answer": "42"]) -> RewardInput {
    RewardInput(prompt: "p", completion: completion, completionTokens: tokens, fields: fields)
  }

  func test_builtins_scoreAsDocumented() throws {
    let numeric = try make(["type": "numeric_match", "column": "answer"])
    XCTAssertEqual(numeric.reward(input("6 × 7 = 42")), 1)
    XCTAssertEqual(numeric.reward(input("42, no: 41")), 0, "the last number counts")
    XCTAssertEqual(numeric.reward(input("no number")), 0)
    XCTAssertEqual(numeric.reward(input("1,234", ["answer": "1234"])), 1, "thousands separators")
    XCTAssertNil(numeric.reward(input("42", ["other": "1"])), "no reference: not applicable")
    let tagged = try make(["type": "numeric_match", "column": "answer", "pattern": "<answer>(.*?)</answer>"])
    XCTAssertEqual(tagged.reward(input("7 then <answer>42</answer> 9")), 1)
    XCTAssertEqual(tagged.reward(input("42")), 0, "the pattern must match")
    let exact = try make(["type": "exact_match", "column": "answer", "ignore_case": "true"])
    XCTAssertEqual(exact.reward(input("  Paris \n", ["answer": "paris"])), 1)
    XCTAssertEqual(exact.reward(input("Paris.", ["answer": "paris"])), 0)
    let format = try make(["type": "regex", "pattern": "^<answer>\\d+</answer>$", "full_match": "true"])
    XCTAssertEqual(format.reward(input("<answer>12</answer>")), 1)
    XCTAssertEqual(format.reward(input("x <answer>12</answer>")), 0)
    let search = try make(["type": "regex", "pattern": "\\d+"])
    XCTAssertEqual(search.reward(input("abc 5")), 1)
    let think = try make(["type": "think_format"])
    XCTAssertEqual(think.reward(input("<think>\nhm\n</think>\nok")), 1)
    XCTAssertEqual(think.reward(input("<think>a</think><think>b</think>")), 0, "one think block only")
    let json = try make(["type": "valid_json", "require_object": "true"])
    XCTAssertEqual(json.reward(input("{\"a\": 1}")), 1)
    XCTAssertEqual(json.reward(input("Here:\n```json\n{\"a\": [1, 2]}\n```")), 1)
    XCTAssertEqual(json.reward(input("[1, 2]")), 0, "an object is required")
    XCTAssertEqual(json.reward(input("{a: 1}")), 0)
    // DAPO's soft overlong punishment, TRL's example: 90 tokens of max 100, cache 20 → −0.5.
    let overlong = try make(["type": "length_penalty", "max_length": "100", "cache": "20"])
    XCTAssertEqual(overlong.reward(input("", tokens: 90)), -0.5)
    XCTAssertEqual(overlong.reward(input("", tokens: 80)), 0)
    XCTAssertEqual(overlong.reward(input("", tokens: 101)), -1)
  }

  func test_badConfigs_nameTheKey() throws {
    let cases: [([String: String], String)] = [
      (["type": "nope"], "reward_functions[0].type: unknown reward function \"nope\""),
      ([:], "reward_functions[0].type: missing"),
      (["type": "regex", "pattern": "(unclosed"], "reward_functions[0].pattern: invalid regular expression"),
      (["type": "regex"], "reward_functions[0].pattern: regex needs it"),
      (["type": "numeric_match"], "reward_functions[0].column: numeric_match needs it"),
      (["type": "exact_match", "column": "a", "colour": "red"], "reward_functions[0].colour: not an option of exact_match"),
      (["type": "numeric_match", "column": "a", "tolerance": "-1"], "reward_functions[0].tolerance: must be a number ≥ 0"),
      (["type": "valid_json", "require_object": "maybe"], "reward_functions[0].require_object: must be true or false"),
      (["type": "length_penalty", "max_length": "10", "cache": "20"], "max_length 10 must be ≥ 1 and ≥ cache 20"),
    ]
    for (options, message) in cases {
      XCTAssertThrowsError(try make(options)) { e in
        XCTAssertTrue("\(e)".contains(message), "\(options): \(e)")
      }
    }
    let f = try make(["type": "numeric_match", "column": "answer"])
    let set = try GRPORewardSet(functions: [f])
    XCTAssertThrowsError(try set.check(records: [["answer": "1"], ["question": "2"]], source: "d.jsonl")) { e in
      XCTAssertTrue("\(e)".contains("reads the column \"answer\": record 2 of d.jsonl has no such field"), "\(e)")
    }
    XCTAssertThrowsError(try GRPORewardSet(functions: [f], weights: [1, 2])) { e in
      XCTAssertTrue("\(e)".contains("reward_weights: 2 weights for 1 reward functions"), "\(e)")
    }
    XCTAssertThrowsError(try GRPORewardSet(functions: []))
  }

  func test_rewardSet_scoresRowsWithNaNWhereNotApplicable_andUniqueNames() throws {
    let a = try make(["type": "numeric_match", "column": "answer"]), b = try make(["type": "numeric_match", "column": "other"])
    let set = try GRPORewardSet(functions: [a, b, ModelReward { rows in rows.map { Double($0.count) } }], weights: [1, 0.5, 2])
    XCTAssertEqual(set.names, ["numeric_match_0", "numeric_match_1", "reward_model"])
    let got = try set.score([input("42"), input("7")], sequences: [[1, 2, 3], [4]])
    XCTAssertEqual(got[0][0], 1); XCTAssertEqual(got[1][0], 0)
    XCTAssertTrue(got[0][1].isNaN, "no \"other\" field")
    XCTAssertEqual(got.map { $0[2] }, [3, 1])
  }
}
