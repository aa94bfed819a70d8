// Loading (JSON array / JSONL), error messages, and per-format normalisation.
import Foundation
import XCTest
@testable import VKFData

/// The URL of a committed fixture file.
func fixture(_ name: String) throws -> URL {
  guard let url = Bundle.module.url(forResource: "Fixtures/\(name)", withExtension: nil) else {
    throw XCTSkip("fixture \(name) missing from the bundle")
  }
  return url
}

final class LoadingAndFormatTests: XCTestCase {
  private func examples(_ name: String) throws -> [Example] {
    let loaded = try DatasetLoader.load(try fixture(name))
    return try loaded.records.enumerated().map { try DatasetFormat.normalise($1, file: name, index: $0) }
  }

  func test_alpaca_jsonArray_normalisesInstructionInputAndSystem() throws {
    let got = try examples("alpaca.json")
    XCTAssertEqual(got, [
      .conversation(Conversation(system: "Be brief.", turns: [
        Turn(role: "user", content: "Add the numbers.\n\n2 and 3"), Turn(role: "assistant", content: "5")])),
      .conversation(Conversation(turns: [
        Turn(role: "user", content: "Capital of France?"), Turn(role: "assistant", content: "Paris")])),
    ])
  }

  func test_promptResponse_keepsReasoning() throws {
    let got = try examples("prompt_response.jsonl")
    XCTAssertEqual(got[1], .conversation(Conversation(turns: [
      Turn(role: "user", content: "2+2?"), Turn(role: "assistant", content: "4", reasoningContent: "Two plus two.")])))
    XCTAssertEqual(DatasetFormat.detect(keys: ["prompt", "response"]), .promptResponse)
  }

  func test_promptCompletion_detected() throws {
    XCTAssertEqual(try examples("prompt_completion.jsonl"), [.conversation(Conversation(turns: [
      Turn(role: "user", content: "The sky is"), Turn(role: "assistant", content: " blue.")]))])
  }

  func test_messages_systemSplitOffAndReasoningKept() throws {
    XCTAssertEqual(try examples("messages.jsonl"), [.conversation(Conversation(system: "S", turns: [
      Turn(role: "user", content: "a"), Turn(role: "assistant", content: "b", reasoningContent: "r"),
      Turn(role: "user", content: "c"), Turn(role: "assistant", content: "d")]))])
  }

  func test_shareGPT_rolesMapped() throws {
    XCTAssertEqual(try examples("sharegpt.jsonl"), [.conversation(Conversation(system: "S", turns: [
      Turn(role: "user", content: "q"), Turn(role: "assistant", content: "a")]))])
  }

  func test_text_raw() throws {
    XCTAssertEqual(try examples("text.jsonl"), [.text("Once upon a time.")])
  }

  func test_formatOverride_forcesFormat() throws {
    let record: DatasetRecord = ["prompt": "p", "completion": "c", "text": "t"]
    XCTAssertEqual(try DatasetFormat.normalise(record, format: .text), .text("t"))
  }

  func test_malformedLine_errorNamesFileAndLine() throws {
    XCTAssertThrowsError(try DatasetLoader.load(try fixture("malformed.jsonl"))) { error in
      let text = "\(error)"
      XCTAssertTrue(text.contains("malformed.jsonl:2:"), text)
      XCTAssertFalse(text.contains("\n"), "one line: \(text)")
    }
  }

  func test_skipBadRecords_countsSkipped() throws {
    let loaded = try DatasetLoader.load(try fixture("malformed.jsonl"), skipBadRecords: true)
    XCTAssertEqual(loaded.records.count, 2)
    XCTAssertEqual(loaded.skippedRecords, 1)
  }

  func test_emptyFile_clearError() throws {
    XCTAssertThrowsError(try DatasetLoader.load(try fixture("empty.jsonl"))) { error in
      XCTAssertEqual(error as? DatasetError, .empty(file: "empty.jsonl"))
      XCTAssertTrue("\(error)".contains("no records"))
    }
  }

  func test_unknownShape_namesKeysAndFormats() throws {
    XCTAssertThrowsError(try examples("unknown.jsonl")) { error in
      let text = "\(error)"
      XCTAssertTrue(text.contains("answer, question"), text)
      XCTAssertTrue(text.contains("conversations"), text)
    }
  }

  func test_dataConfig_decodesDefaultsForMissingKeys() throws {
    let config = try JSONDecoder().decode(DataConfig.self, from: Data(#"{"max_seq_length": 16}"#.utf8))
    XCTAssertEqual(config.maxSeqLength, 16)
    XCTAssertEqual(config.reasoningTemplate, DataConfig().reasoningTemplate)
  }
}
