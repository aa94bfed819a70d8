import Foundation
import XCTest
@testable import VKFTokenizer

/// Golden tests: every template × conversation rendered by jinja2 the way transformers
/// configures it (`tools/make_chat_fixtures.py`) must come out byte-identical here.
final class ChatTemplateFixtureTests: XCTestCase {
  private var chatDirectory: URL { Bundle.module.resourceURL!.appendingPathComponent("Fixtures/chat") }

  private func templateSource(_ name: String) throws -> String {
    try String(contentsOf: chatDirectory.appendingPathComponent("templates/\(name).jinja"), encoding: .utf8)
  }

  func test_everyFixture_matchesJinja2Exactly() throws {
    let text = try String(contentsOf: chatDirectory.appendingPathComponent("expected.json"), encoding: .utf8)
    guard case let .object(root) = try JinjaValue(json: text), case let .array(cases)? = root["cases"] else {
      return XCTFail("expected.json has no cases")
    }
    XCTAssertGreaterThan(cases.count, 50)
    var templates: [String: ChatTemplate] = [:]
    for case let .object(c) in cases {
      let name = c["template"]?.stringValue ?? ""
      let label = "\(name)/\(c["case"]?.stringValue ?? "")/agp=\(c["add_generation_prompt"]?.isTruthy ?? false)"
      if templates[name] == nil { templates[name] = try ChatTemplate(source: try templateSource(name)) }
      guard let template = templates[name], case let .array(messages)? = c["messages"],
            case let .object(extra)? = c["extra"] else { return XCTFail("malformed case \(label)") }
      let render = {
        try template.render(messages: messages, addGenerationPrompt: c["add_generation_prompt"]?.isTruthy ?? false,
                            bosToken: c["bos_token"]?.stringValue ?? "", eosToken: c["eos_token"]?.stringValue ?? "",
                            extra: Dictionary(uniqueKeysWithValues: extra.pairs))
      }
      if let expected = c["expected"]?.stringValue {
        do {
          let got = try render()
          XCTAssertEqual(got, expected, label)
        } catch { XCTFail("\(label): \(error)") }
      } else {
        XCTAssertThrowsError(try render(), label) { e in
          XCTAssertEqual(e as? ChatTemplateError, .raised(c["error"]?.stringValue ?? ""), label)
        }
      }
    }
  }

  func test_smollm2_typedMessagesRenderLikeDictionaries() throws {
    let t = try ChatTemplate(source: try templateSource("smollm2"))
    let typed = try t.render(messages: [ChatMessage(role: "user", content: "Hi")], addGenerationPrompt: true)
    let untyped = try t.render(messages: [["role": "user", "content": "Hi"]], addGenerationPrompt: true)
    XCTAssertEqual(typed, untyped)
    XCTAssertEqual(typed, "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
      + "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
  }

  func test_loadModelDirectory_prefersChatTemplateJinja() throws {
    // shared/ sits beside the repository (CI clones it there too).
    let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("../../../shared/models/smollm2-135m-instruct").standardized
    guard FileManager.default.fileExists(atPath: dir.path) else { throw XCTSkip("shared model not present") }
    let t = try ChatTemplate.load(modelDirectory: dir)
    XCTAssertEqual(t.source, try templateSource("smollm2"))
  }

  func test_tokenizerConfig_stringAndNamedListForms() throws {
    let plain = #"{"chat_template": "{{ bos_token }}A", "bos_token": {"content": "<s>"}, "eos_token": "</s>"}"#
    XCTAssertEqual(try ChatTemplate.fromTokenizerConfig(Data(plain.utf8)).render(messages: [JinjaValue](), bosToken: "<s>"), "<s>A")
    let tokens = try ChatTemplate.specialTokens(tokenizerConfig: Data(plain.utf8))
    XCTAssertEqual(tokens.bos, "<s>")
    XCTAssertEqual(tokens.eos, "</s>")
    let list = #"{"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}"#
    XCTAssertEqual(try ChatTemplate.fromTokenizerConfig(Data(list.utf8)).source, "D")
    XCTAssertEqual(try ChatTemplate.fromTokenizerConfig(Data(list.utf8), name: "tool_use").source, "T")
    XCTAssertThrowsError(try ChatTemplate.fromTokenizerConfig(Data(#"{"model_max_length": 5}"#.utf8)))
  }
}
