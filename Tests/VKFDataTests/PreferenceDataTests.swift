// Preference records: every accepted shape, hh-rlhf transcripts, templating, truncation, skips.
import Foundation
import XCTest
import VKFTokenizer
@testable import VKFData

final class PreferenceDataTests: XCTestCase {
  private let shared = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../../../shared").standardizedFileURL

  private func smol(_ limits: PreferenceLimits = PreferenceLimits()) throws -> PreferenceTokenizer {
    let dir = shared.appendingPathComponent("models/smollm2-135m-instruct")
    let json = dir.appendingPathComponent("tokenizer.json")
    guard FileManager.default.fileExists(atPath: json.path) else { throw XCTSkip("SmolLM2 tokenizer absent at \(dir.path)") }
    let template = HFChatTemplate(template: try ChatTemplate.load(modelDirectory: dir), bosToken: "<|im_start|>",
                                  eosToken: "<|im_end|>")
    return try PreferenceTokenizer(tokenizer: try Tokenizer(contentsOf: json), template: template, limits: limits)
  }

  func test_promptChosenRejected_strings() throws {
    let r = try PreferenceRecord.normalise(["prompt": "Q?", "chosen": "good", "rejected": "bad"])
    XCTAssertEqual(r.prompt, Conversation(turns: [Turn(role: "user", content: "Q?")]))
    XCTAssertEqual(r.chosen, "good")
    XCTAssertEqual(r.rejected, "bad")
  }

  func test_messageLists_explicitAndImplicitPrompt() throws {
    let explicit = try PreferenceRecord.normalise([
      "prompt": [["role": "system", "content": "S"], ["role": "user", "content": "Q"]],
      "chosen": [["role": "assistant", "content": "A"]], "rejected": [["role": "assistant", "content": "B"]]])
    XCTAssertEqual(explicit.prompt.system, "S")
    XCTAssertEqual(explicit.chosen, "A")
    let implicit = try PreferenceRecord.normalise([
      "chosen": [["role": "user", "content": "Q"], ["role": "assistant", "content": "A"]],
      "rejected": [["role": "user", "content": "Q"], ["role": "assistant", "content": "B"]]])
    XCTAssertEqual(implicit.prompt.turns, [Turn(role: "user", content: "Q")])
    XCTAssertEqual(implicit.rejected, "B")
    XCTAssertThrowsError(try PreferenceRecord.normalise([
      "chosen": [["role": "user", "content": "Q"], ["role": "assistant", "content": "A"]],
      "rejected": [["role": "user", "content": "other"], ["role": "assistant", "content": "B"]]]))
  }

  func test_hhTranscript_promptIsSharedPrefix() throws {
    let c = "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: How?\n\nAssistant: Like this."
    let r = "\n\nHuman: Hi\n\nAssistant: Hello.\n\nHuman: How?\n\nAssistant: No."
    let rec = try PreferenceRecord.normalise(["chosen": c, "rejected": r])
    XCTAssertEqual(rec.prompt.turns, [Turn(role: "user", content: "Hi"), Turn(role: "assistant", content: "Hello."),
                                      Turn(role: "user", content: "How?")])
    XCTAssertEqual(rec.chosen, "Like this.")
    XCTAssertEqual(rec.rejected, "No.")
    XCTAssertThrowsError(try PreferenceRecord.normalise(["chosen": c, "rejected": "\n\nHuman: X\n\nAssistant: No."]))
    // An answer that continues with its own "Assistant:" turn (hh-rlhf has such records).
    let cont = try PreferenceRecord.normalise([
      "chosen": "\n\nHuman: Q\n\nAssistant: Sure:\n\nAssistant: more", "rejected": "\n\nHuman: Q\n\nAssistant: No."])
    XCTAssertEqual(cont.prompt.turns, [Turn(role: "user", content: "Q")])
    XCTAssertEqual(cont.chosen, "Sure:\n\nAssistant: more")
    XCTAssertThrowsError(try PreferenceRecord.normalise(["chosen": "no markers", "rejected": "x"]))
  }

  func test_badShapes_oneLineErrors() {
    // Missing keys are named, with the preference formats (not the SFT ones); SFT records
    // are recognised as such.
    let cases: [(DatasetRecord, [String])] = [
      (["prompt": "x", "chosen": "y"], ["f: record 2: has keys [chosen, prompt] but no \"rejected\"",
                                         "{prompt, chosen, rejected}"]),
      (["prompt": "x", "rejected": "y"], ["but no \"chosen\";"]),
      (["question": "x"], ["has keys [question] but no \"chosen\" and \"rejected\";"]),
      (["text": "x"], ["an SFT record, format text"]),
      (["instruction": "x", "input": "", "output": "y"], ["an SFT record, format alpaca",
                                                          "without --objective dpo/reward"]),
      (["messages": [["role": "user", "content": "x"]]], ["an SFT record, format messages"]),
    ]
    for (record, fragments) in cases {
      XCTAssertThrowsError(try PreferenceRecord.normalise(record, file: "f", index: 2)) { e in
        for f in fragments { XCTAssertTrue("\(e)".contains(f), "\(e) lacks \(f)") }
        XCTAssertFalse("\(e)".contains("alpaca {instruction"), "no SFT format list: \(e)")
      }
    }
    XCTAssertThrowsError(try PreferenceRecord.normalise(["prompt": 3, "chosen": "a", "rejected": "b"], file: "f", index: 4)) { e in
      XCTAssertEqual("\(e)", "f: record 4: \"prompt\" must be a string or a list of messages")
    }
  }

  func test_tokenize_answersEndWithEOS_targetsOnAnswerOnly() throws {
    let tok = try smol()
    var stats = PreferenceStats()
    let rec = PreferenceRecord(prompt: Conversation(turns: [Turn(role: "user", content: "2+2?")]), chosen: "4", rejected: "5")
    let pair = try XCTUnwrap(try tok.tokenize(rec, stats: &stats))
    XCTAssertEqual(tok.tokenizer.decode(pair.chosen), "4<|im_end|>")
    XCTAssertEqual(tok.tokenizer.decode(pair.rejected), "5<|im_end|>")
    XCTAssertTrue(tok.tokenizer.decode(pair.prompt).hasSuffix("<|im_start|>assistant\n"))
    let ex = pair.example(chosen: true)
    XCTAssertEqual(ex.targets.filter { $0 != -100 }, pair.chosen)
    XCTAssertEqual(ex.inputIds, pair.prompt + pair.chosen)
    XCTAssertEqual(stats, PreferenceStats())
  }

  func test_truncation_keepsPromptEndAndAnswerStart_skipsIdentical() throws {
    let tok = try smol(PreferenceLimits(maxLength: 24, maxPromptLength: 8))
    var stats = PreferenceStats()
    let long = String(repeating: "word ", count: 40)
    let rec = PreferenceRecord(prompt: Conversation(turns: [Turn(role: "user", content: long + "END")]),
                               chosen: "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi",
                               rejected: "one two three four five six seven eight nine ten eleven twelve")
    let pair = try XCTUnwrap(try tok.tokenize(rec, stats: &stats))
    XCTAssertEqual(pair.prompt.count, 8)
    XCTAssertTrue(tok.tokenizer.decode(pair.prompt).hasSuffix("assistant\n"), "the prompt keeps its end")
    XCTAssertEqual(pair.prompt.count + max(pair.chosen.count, pair.rejected.count), 24)
    XCTAssertTrue(tok.tokenizer.decode(pair.chosen).hasPrefix("alpha beta"), "answers keep their start")
    XCTAssertEqual(stats.truncated, 1)
    // What the warning line reports: every token cut from the prompt and both answers, and
    // the uncut prompt + longer answer.
    var uncut = PreferenceStats()
    let wide = try smol(PreferenceLimits(maxLength: 4096, maxPromptLength: 2048))
    let whole = try XCTUnwrap(try wide.tokenize(rec, stats: &uncut))
    XCTAssertEqual(uncut.truncated, 0)
    XCTAssertEqual(stats.longestCut, whole.prompt.count + max(whole.chosen.count, whole.rejected.count))
    XCTAssertEqual(stats.droppedTokens, whole.prompt.count + whole.chosen.count + whole.rejected.count
      - (pair.prompt.count + pair.chosen.count + pair.rejected.count))
    // Answers equal in their first tokens become identical once cut: skipped and counted.
    let same = PreferenceRecord(prompt: rec.prompt, chosen: long + "A", rejected: long + "B")
    XCTAssertNil(try tok.tokenize(same, stats: &stats))
    XCTAssertEqual(stats.identical, 1)
  }

  func test_realHHRLHF_loads() throws {
    let file = shared.appendingPathComponent("data/hh-rlhf/harmless_pairs.jsonl")
    guard FileManager.default.fileExists(atPath: file.path) else { throw XCTSkip("hh-rlhf data absent") }
    let data = try PreferenceDataset.load(file, tokenizer: try smol(PreferenceLimits(maxLength: 256, maxPromptLength: 128)))
    XCTAssertGreaterThan(data.pairs.count, 1000)
    XCTAssertTrue(data.pairs.allSatisfy { $0.prompt.count + max($0.chosen.count, $0.rejected.count) <= 256 })
    XCTAssertTrue(data.pairs.allSatisfy { $0.chosen != $0.rejected && !$0.chosen.isEmpty })
  }
}
