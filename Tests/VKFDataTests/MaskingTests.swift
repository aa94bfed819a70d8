// Masking on the real SmolLM2 chat template, truncation, and the real alpaca data.
import Foundation
import XCTest
import VKFTokenizer
@testable import VKFData

final class MaskingTests: XCTestCase {
  private let shared = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../../../shared").standardizedFileURL

  private func smol(_ config: DataConfig = DataConfig()) throws -> SFTTokenizer {
    let dir = shared.appendingPathComponent("models/smollm2-135m-instruct")
    let json = dir.appendingPathComponent("tokenizer.json")
    guard FileManager.default.fileExists(atPath: json.path) else { throw XCTSkip("SmolLM2 tokenizer absent at \(dir.path)") }
    let tokenizer = try Tokenizer(contentsOf: json)
    let template = HFChatTemplate(template: try ChatTemplate.load(modelDirectory: dir), bosToken: "<|im_start|>",
                                  eosToken: "<|im_end|>")
    return try SFTTokenizer(tokenizer: tokenizer, template: template, config: config)
  }

  /// Ids whose *target* is trained, i.e. the trained tokens themselves (targets are shifted by one).
  private func trainedTokens(_ example: TokenizedExample) -> [Int] {
    example.targets.filter { $0 != TokenizedExample.ignoreIndex }
  }

  func test_smolTemplate_promptMasked_answerAndEOSTrained() throws {
    let sft = try smol()
    var stats = RenderStats()
    let convo = Conversation(turns: [Turn(role: "user", content: "What is 2+2?"), Turn(role: "assistant", content: "It is 4.")])
    let out = try sft.tokenize(.conversation(convo), stats: &stats)
    XCTAssertEqual(sft.tokenizer.decode(trainedTokens(out)), "It is 4.<|im_end|>")
    let prompt = try sft.template.render(messages: Array(sft.messages(convo).dropLast()), addGenerationPrompt: true)
    let promptCount = sft.tokenizer.encode(prompt, addSpecialTokens: false).count
    XCTAssertLessThan(promptCount, out.targets.count)
    guard promptCount < out.targets.count else { return }
    XCTAssertTrue(out.targets[..<(promptCount - 1)].allSatisfy { $0 == -100 })
    XCTAssertNotEqual(out.targets[promptCount - 1], -100, "the first answer token is trained")
    XCTAssertEqual(out.targets.last, -100)
    XCTAssertEqual(stats, RenderStats())
  }

  func test_smolTemplate_multiTurn_everyAnswerTrained_reasoningWrapped() throws {
    let sft = try smol()
    var stats = RenderStats()
    let convo = Conversation(system: "S", turns: [
      Turn(role: "user", content: "a"), Turn(role: "assistant", content: "b", reasoningContent: "r"),
      Turn(role: "user", content: "c"), Turn(role: "assistant", content: "d")])
    let out = try sft.tokenize(.conversation(convo), stats: &stats)
    XCTAssertEqual(sft.tokenizer.decode(trainedTokens(out)), "<think>\nr\n</think>\n\nb<|im_end|>d<|im_end|>")
    XCTAssertEqual(stats.lastTurnOnly, 0)
  }

  func test_trainOnPrompt_trainsEverything() throws {
    var config = DataConfig()
    config.trainOnPrompt = true
    let sft = try smol(config)
    var stats = RenderStats()
    let out = try sft.tokenize(.conversation(Conversation(turns: [Turn(role: "user", content: "x"),
                                                                  Turn(role: "assistant", content: "y")])), stats: &stats)
    XCTAssertEqual(trainedTokens(out), Array(out.inputIds.dropFirst()))
  }

  func test_rawText_allTrained_eosAppended() throws {
    let sft = try smol()
    var stats = RenderStats()
    let out = try sft.tokenize(.text("Hello world"), stats: &stats)
    XCTAssertEqual(out.inputIds.last, sft.tokenizer.eosTokenID)
    XCTAssertEqual(trainedTokens(out), Array(out.inputIds.dropFirst()))
  }

  func test_alpacaPromptTemplate_appendsEOS() throws {
    let base = try smol()
    let sft = try SFTTokenizer(tokenizer: base.tokenizer, template: AlpacaPromptTemplate(), config: DataConfig())
    var stats = RenderStats()
    let out = try sft.tokenize(.conversation(Conversation(turns: [Turn(role: "user", content: "Q"),
                                                                  Turn(role: "assistant", content: "A")])), stats: &stats)
    XCTAssertEqual(sft.tokenizer.decode(trainedTokens(out)), "A<|im_end|>")
  }

  func test_truncation_cutsAndCounts() throws {
    var config = DataConfig()
    config.maxSeqLength = 8
    let sft = try smol(config)
    var stats = RenderStats()
    let text = String(repeating: "word ", count: 50)
    let full = sft.tokenizer.encode(text).count + 1  // + EOS
    let long = try sft.tokenize(.text(text), stats: &stats)
    _ = try sft.tokenize(.text("hi"), stats: &stats)
    XCTAssertEqual(long.inputIds.count, 8)
    XCTAssertEqual(long.targets.count, 8)
    XCTAssertEqual(stats.truncated, 1)
    // What the warning line reports: the tokens dropped and the longest cut record.
    XCTAssertEqual(stats.droppedTokens, full - 8)
    XCTAssertEqual(stats.longestCut, full)
    _ = try sft.tokenize(.text(text + text), stats: &stats)
    XCTAssertEqual(stats.truncated, 2)
    XCTAssertGreaterThan(stats.longestCut, full)
    XCTAssertEqual(stats.droppedTokens, full - 8 + stats.longestCut - 8)
  }

  func test_realAlpaca_200RecordsLoadAndTokenize() throws {
    let sft = try smol()
    let url = shared.appendingPathComponent("data/alpaca/alpaca_train.json")
    guard FileManager.default.fileExists(atPath: url.path) else { throw XCTSkip("alpaca data absent") }
    var loaded = try DatasetLoader.load(url)
    loaded.records = Array(loaded.records.prefix(200))
    XCTAssertEqual(loaded.records.count, 200)
    let dataset = try SFTDataset.build(loaded, tokenizer: sft)
    XCTAssertEqual(dataset.examples.count, 200)
    for example in dataset.examples {
      XCTAssertEqual(example.inputIds.count, example.targets.count)
      XCTAssertTrue(example.targets.contains(sft.tokenizer.eosTokenID ?? -1), "EOS must be trained")
    }
  }

  func test_templateBreakingPrefix_fallsBackToLastTurn_andCounts() throws {
    let base = try smol()
    let sft = try SFTTokenizer(tokenizer: base.tokenizer, template: DropsOldAnswersTemplate(), config: DataConfig())
    var stats = RenderStats()
    let convo = Conversation(turns: [Turn(role: "user", content: "a"), Turn(role: "assistant", content: "b"),
                                     Turn(role: "user", content: "c"), Turn(role: "assistant", content: "d")])
    let out = try sft.tokenize(.conversation(convo), stats: &stats)
    XCTAssertEqual(stats.lastTurnOnly, 1)
    XCTAssertEqual(sft.tokenizer.decode(trainedTokens(out)), " d<|im_end|>")
  }
}

extension MaskingTests {
  /// A template that fails on a record is reported with the data file and the record.
  func test_templateFailure_namesTheDataFileAndRecord() throws {
    let base = try smol()
    let sft = try SFTTokenizer(tokenizer: base.tokenizer, template: RefusesTemplate(), config: DataConfig())
    let loaded = try DatasetLoader.parse(
      Data(#"[{"prompt": "a", "response": "b"}, {"prompt": "c", "response": "d"}]"#.utf8), file: "/data/chats.jsonl")
    XCTAssertThrowsError(try SFTDataset.build(loaded, tokenizer: sft)) { error in
      XCTAssertEqual(error as? DatasetError, .templateFailed(file: "/data/chats.jsonl", record: 0, problem: "no"))
      XCTAssertTrue("\(error)".hasPrefix("/data/chats.jsonl: record 0: the chat template failed"), "\(error)")
    }
  }
}

/// A template that always fails.
private struct RefusesTemplate: ConversationTemplate {
  var rendersReasoning: Bool { false }
  struct No: Error, CustomStringConvertible { var description: String { "no" } }
  func render(messages: [ChatMessage], addGenerationPrompt: Bool) throws -> String { throw No() }
}

/// A template that hides earlier answers once a later user turn exists, breaking prefix-ness.
private struct DropsOldAnswersTemplate: ConversationTemplate {
  var rendersReasoning: Bool { false }
  func render(messages: [ChatMessage], addGenerationPrompt: Bool) throws -> String {
    let lastUser = messages.lastIndex { $0.role == "user" } ?? 0
    var out = ""
    for (i, m) in messages.enumerated() where !(m.role == "assistant" && i < lastUser) {
      out += " " + m.role + ": " + (m.content ?? "") + (m.role == "assistant" ? "" : " |")
    }
    return out + (addGenerationPrompt ? " assistant:" : "")
  }
}
