import Foundation
import XCTest
@testable import VKFTokenizer

/// A chat template is code that arrives with a downloaded model: every way it could hang,
/// exhaust memory or overflow the stack ends in a one-line error instead (`JinjaLimits`), and
/// Python-int arithmetic past 64 bits is an error, never a trap.
final class ChatTemplateLimitsTests: XCTestCase {
  private func render(_ source: String) throws -> String {
    try ChatTemplate(source: source).render(messages: [[String: Any]]())
  }

  private func assertRefused(_ source: String, _ words: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try render(source), file: file, line: line) { error in
      XCTAssertTrue("\(error)".contains(words), "\"\(error)\" lacks \"\(words)\"", file: file, line: line)
      XCTAssertFalse("\(error)".contains("\n"), "one line", file: file, line: line)
    }
  }

  func test_unboundedWork_isRefused() {
    // Nested loops: 10⁵ × 10⁵ iterations.
    assertRefused("{% for i in range(99999) %}{% for j in range(99999) %}x{% endfor %}{% endfor %}", "steps")
    // A macro calling itself.
    assertRefused("{% macro m(n) %}{{ m(n + 1) }}{% endmacro %}{{ m(0) }}", "nested more than")
    // Doubling a string 64 times.
    assertRefused("{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "MiB")
    assertRefused("{{ 'x' * 9999999999 }}", "MiB")
    // One repetition stops at 1 MiB (the fuzzer's 'x' * 99999999 took over a second).
    assertRefused("{{ 'x' * 99999999 }}", "would pass 1 MiB")
    assertRefused("{{ [1, 2] * 99999999999 }}", "items")
  }

  /// A template cannot read files: Jinja's loader tags are refused when parsed, and the
  /// functions that exist do not touch the file system.
  func test_fileAccessTags_areRefused() {
    for source in ["{% include '/etc/passwd' %}", "{% import '/etc/passwd' as p %}", "{% extends '/etc/passwd' %}",
                   "{% from '/etc/passwd' import x %}"] {
      XCTAssertThrowsError(try render(source), source) { error in
        XCTAssertTrue("\(error)".contains("unsupported tag"), "\(error)")
        XCTAssertFalse("\(error)".contains("\n"), "one line")
      }
    }
  }

  func test_deepNesting_isASyntaxError() {
    assertRefused("{{ " + String(repeating: "(", count: 200) + "1" + String(repeating: ")", count: 200) + " }}", "nested")
    assertRefused("{{ " + String(repeating: "not ", count: 200) + "x }}", "nested")
    assertRefused("{{ " + String(repeating: "- ", count: 200) + "1 }}", "nested")
    assertRefused("{{ " + String(repeating: "[", count: 200) + String(repeating: "]", count: 200) + " }}", "nested")
    assertRefused(String(repeating: "{% if true %}", count: 10_000), "nested")
    // A long left-leaning chain (evaluation recurses once per operator).
    assertRefused("{{ 1" + String(repeating: " + 1", count: 5_000) + " }}", "tokens")
  }

  func test_withinTheLimits_rendersAsBefore() throws {
    XCTAssertEqual(try render(String(repeating: "(", count: 30) + "{{ 1 }}" + String(repeating: ")", count: 30)),
                   String(repeating: "(", count: 30) + "1" + String(repeating: ")", count: 30))
    XCTAssertEqual(try render("{{ " + String(repeating: "(", count: 30) + "2" + String(repeating: ")", count: 30) + " }}"), "2")
    XCTAssertEqual(try render("{{ 1" + String(repeating: " + 1", count: 400) + " }}"), "401")
    XCTAssertEqual(try render("{{ '-' * 80 }}"), String(repeating: "-", count: 80))
    // tojson's indent: negative is Python's 0 spaces; a huge one is clamped, never a trap.
    XCTAssertEqual(try render("{{ [1] | tojson(indent=-3) }}"), "[\n1\n]")
    XCTAssertNoThrow(try render("{{ [[1]] | tojson(indent=9223372036854775807) }}"))
    // Empty repeated any number of times is empty, at once (the fuzzer's '' * 99999999 took > 1 s).
    XCTAssertEqual(try render("{{ '' * 99999999 }}{{ ([] * 99999999) | length }}"), "0")
    XCTAssertEqual(try render("{% for i in range(3) %}{% for j in range(2) %}{{ i * j }}{% endfor %}{% endfor %}"), "000102")
    XCTAssertEqual(try render("{% macro f(n) %}{% if n > 0 %}{{ n }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(5) }}"),
                   "54321")
  }

  func test_integerOverflow_isAnError_floorDivisionIsPython() throws {
    assertRefused("{{ 9223372036854775807 + 1 }}", "integer overflow")
    assertRefused("{{ 4294967296 * 4294967296 }}", "integer overflow")
    assertRefused("{{ 10 ** 40 }}", "integer overflow")
    assertRefused("{{ (-9223372036854775807 - 1) // -1 }}", "integer overflow")
    XCTAssertEqual(try render("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 // -2 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }}"),
                   "3 -4 -4 2 -2 1024")
    // Conversions that used to trap: an int filter over a huge float, widths at the extremes.
    XCTAssertEqual(try render("{{ 1e300 | int }} {{ '1e300' | int }}"), "0 0")
    XCTAssertEqual(try render("{{ 'ab' | center(-9223372036854775807) }}"), "ab")
    XCTAssertEqual(try render("{{ 'a\nb' | indent(-5) }}"), "a\nb")
  }
}
