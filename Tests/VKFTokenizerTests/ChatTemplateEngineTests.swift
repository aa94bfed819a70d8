import XCTest
@testable import VKFTokenizer

/// Unit tests of the Jinja subset; expected strings are what jinja2 3.1 prints for the
/// same template under transformers' settings.
final class ChatTemplateEngineTests: XCTestCase {
  private func render(_ source: String, _ context: [String: JinjaValue] = [:]) throws -> String {
    try ChatTemplate(source: source).render(messages: [JinjaValue](), extra: context)
  }

  func test_loopVariables_andForElse() throws {
    let s = "{% for x in items %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.first }}{{ loop.last }}"
      + "{{ loop.length }}|{% else %}empty{% endfor %}"
    XCTAssertEqual(try render(s, ["items": .array([.string("a"), .string("b")])]), "102TrueFalse2|211FalseTrue2|")
    XCTAssertEqual(try render(s, ["items": .array([])]), "empty")
  }

  func test_tupleUnpacking_itemsAndLoopFilter() throws {
    let o = JinjaValue.object(JinjaObject([("a", .int(1)), ("b", .int(2)), ("c", .int(3))]))
    XCTAssertEqual(try render("{% for k, v in d.items() if v != 2 %}{{ k }}={{ v }};{% endfor %}", ["d": o]), "a=1;c=3;")
  }

  func test_whitespaceControl_trimAndLstripBlocks() throws {
    XCTAssertEqual(try render("  {% if true %}\n    x\n  {% endif %}\ny"), "    x\ny")
    XCTAssertEqual(try render("a  {%- if true -%}  b  {%- endif %}"), "ab")
    XCTAssertEqual(try render("{# c #}\nz\n"), "z")
  }

  func test_namespace_survivesLoopScope_whileSetDoesNot() throws {
    let s = "{% set ns = namespace(n=0) %}{% set m = 0 %}{% for i in range(3) %}{% set ns.n = ns.n + i %}"
      + "{% set m = m + 1 %}{% endfor %}{{ ns.n }},{{ m }}"
    XCTAssertEqual(try render(s), "3,0")
  }

  func test_expressions_slicesArithmeticAndTests() throws {
    XCTAssertEqual(try render("{{ [1,2,3,4][1:] }}{{ 'abc'[::-1] }}{{ 7 // 2 }}{{ 7 / 2 }}{{ -7 % 3 }}{{ 2 ** 3 }}"),
                   "[2, 3, 4]cba33.528")
    XCTAssertEqual(try render("{{ x is defined }}{{ none is none }}{{ 'a' is string }}{{ {} is mapping }}{{ 1 is number }}"
      + "{{ 'b' not in 'abc' }}{{ 'x' if false else 'y' }}"), "FalseTrueTrueTrueTrueFalsey")
    XCTAssertEqual(try render("{{ ' Hi '.strip() ~ '|' ~ 'a,b'.split(',') | join('+') ~ '|' ~ 'hello world' | title }}"),
                   "Hi|a+b|Hello World")
  }

  func test_tojson_matchesPythonJsonDumps() throws {
    let v = try JinjaValue(json: #"{"b": [1, 2.5, true, null], "a": "é\n\"", "e": {}}"#)
    XCTAssertEqual(try render("{{ v | tojson }}", ["v": v]), #"{"b": [1, 2.5, true, null], "a": "é\n\"", "e": {}}"#)
    XCTAssertEqual(try render("{{ v | tojson(indent=2) }}", ["v": .array([.int(1)])]), "[\n  1\n]")
  }

  func test_undefined_rendersEmptyButAttributeOfUndefinedFails() throws {
    XCTAssertEqual(try render("[{{ missing }}]{{ missing | default('d') }}{{ missing | length }}"), "[]d0")
    XCTAssertThrowsError(try render("{{ missing.attr }}"))
  }

  func test_raiseException_throwsRaisedWithMessage() {
    XCTAssertThrowsError(try render("{{ raise_exception('roles must alternate') }}")) { e in
      XCTAssertEqual(e as? ChatTemplateError, .raised("roles must alternate"))
    }
  }

  func test_syntaxErrors_reportTheLine() {
    for (source, line) in [("a\nb\n{% if x %}\nno end", 3), ("{{ 1 + }}", 1), ("x\n{% endfor %}", 2),
                           ("\n\n{{ 'unterminated }}", 3), ("{% frobnicate %}", 1)] {
      XCTAssertThrowsError(try ChatTemplate(source: source), source) { e in
        guard case let .syntax(_, l)? = e as? ChatTemplateError else { return XCTFail("\(source): \(e)") }
        XCTAssertEqual(l, line, source)
      }
    }
  }

  func test_macro_andBreak() throws {
    XCTAssertEqual(try render("{% macro tag(n, s='!') %}<{{ n }}{{ s }}>{% endmacro %}{{ tag('a') }}{{ tag('b', s='?') }}"),
                   "<a!><b?>")
    XCTAssertEqual(try render("{% for i in range(5) %}{% if i == 2 %}{% break %}{% endif %}{{ i }}{% endfor %}"), "01")
  }

  func test_builtins_renderSensibly() throws {
    let chat: [ChatMessage] = [ChatMessage(role: "system", content: "Be brief."), ChatMessage(role: "user", content: "Hi"),
                               ChatMessage(role: "assistant", content: "Hello"), ChatMessage(role: "user", content: "Bye")]
    func r(_ name: String) throws -> String {
      try ChatTemplate.builtin(name).render(messages: chat, addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>")
    }
    XCTAssertEqual(try r("chatml"), "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
      + "<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n")
    XCTAssertEqual(try r("llama2"), "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST] Hello </s><s>[INST] Bye [/INST]")
    XCTAssertEqual(try r("mistral"), "<s>[INST] Be brief.\n\nHi [/INST]Hello</s>[INST] Bye [/INST]")
    XCTAssertEqual(try r("zephyr"), "<|system|>\nBe brief.</s>\n<|user|>\nHi</s>\n<|assistant|>\nHello</s>\n"
      + "<|user|>\nBye</s>\n<|assistant|>\n")
    XCTAssertTrue(try r("llama3").hasPrefix("<s><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"))
    XCTAssertTrue(try r("alpaca").hasSuffix("### Instruction:\nBye\n\n### Response:\n"))
    XCTAssertThrowsError(try ChatTemplate.builtin("vicuna"))
  }
}
