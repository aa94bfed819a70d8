import Foundation
import XCTest
import VKFModel
import VKFTokenizer

/// A predictor that makes a fixed script of tokens overwhelmingly likely, one per step.
final class ScriptedPredictor: TokenPredictor {
  let script: [Int]
  let vocabularySize: Int
  let capacity: Int
  private(set) var steps = 0

  init(script: [Int], vocabularySize: Int, capacity: Int = 1024) {
    self.script = script; self.vocabularySize = vocabularySize; self.capacity = capacity
  }

  func reset() { steps = 0 }

  func append(_ ids: [Int]) throws -> [Float] {
    var l = [Float](repeating: 0, count: vocabularySize)
    l[script[min(steps, script.count - 1)]] = 100
    steps += 1
    return l
  }
}

/// ids → the concatenation of fixed strings, as a byte-free toy tokenizer.
struct ToyDecoder: TokenTextDecoder {
  let vocab: [String]
  func text(of ids: [Int]) -> String { ids.map { vocab[$0] }.joined() }
}

/// Stop conditions and streaming, with scripted tokens; UTF-8 streaming with a real tokenizer.
final class GenerationStopTests: XCTestCase {
  static let vocab = ["Hello", " world", "\n\nUs", "er:", " more", "<eos>", "!"]
  static let eos = 5

  private func run(_ script: [Int], _ config: GenerationConfig, capacity: Int = 1024)
    throws -> (GenerationResult, [String]) {
    let g = TextGenerator(predictor: ScriptedPredictor(script: script, vocabularySize: Self.vocab.count, capacity: capacity),
                          decoder: ToyDecoder(vocab: Self.vocab), eosTokenIDs: [Self.eos])
    var pieces: [String] = []
    let r = try g.generate(prompt: [0], config: config) { pieces.append($0) }
    XCTAssertEqual(pieces.joined(), r.text, "streamed pieces add up to the text")
    return (r, pieces)
  }

  func test_eos_stops_andIsNotOutput() throws {
    let (r, _) = try run([0, 1, 5, 4], GenerationConfig(maxNewTokens: 10))
    XCTAssertEqual(r.stopReason, .eos(5))
    XCTAssertEqual(r.tokenIDs, [0, 1])
    XCTAssertEqual(r.text, "Hello world")
  }

  func test_stopStringSpanningTwoTokens_isTrimmed_andNeverStreamed() throws {
    let (r, pieces) = try run([0, 1, 2, 3, 4], GenerationConfig(maxNewTokens: 10, stopStrings: ["\n\nUser:"]))
    XCTAssertEqual(r.stopReason, .stopString("\n\nUser:"))
    XCTAssertEqual(r.text, "Hello world")
    XCTAssertEqual(r.tokenIDs, [0, 1, 2, 3])
    XCTAssertFalse(pieces.contains { $0.contains("\n") }, "part of the stop string leaked: \(pieces)")
  }

  func test_heldBackPrefix_isReleased_whenNoStopFollows() throws {
    let (r, pieces) = try run([0, 2, 4, 5], GenerationConfig(maxNewTokens: 10, stopStrings: ["\n\nUser:"]))
    XCTAssertEqual(r.stopReason, .eos(5))
    XCTAssertEqual(r.text, "Hello\n\nUs more")
    XCTAssertEqual(pieces, ["Hello", "\n\nUs more"])
  }

  func test_heldBackPrefix_isReleased_atMaxTokens() throws {
    let (r, _) = try run([0, 2], GenerationConfig(maxNewTokens: 2, stopStrings: ["\n\nUser:"]))
    XCTAssertEqual(r.stopReason, .maxTokens)
    XCTAssertEqual(r.text, "Hello\n\nUs")
  }

  func test_maxNewTokens_stops() throws {
    let (r, _) = try run([6], GenerationConfig(maxNewTokens: 3))
    XCTAssertEqual(r.stopReason, .maxTokens)
    XCTAssertEqual(r.text, "!!!")
  }

  func test_fullContext_stops() throws {
    let (r, _) = try run([6], GenerationConfig(maxNewTokens: 30), capacity: 4)
    XCTAssertEqual(r.stopReason, .contextFull)
    XCTAssertEqual(r.tokenIDs.count, 3)  // 1 prompt token + 3 = capacity
  }

  func test_stopMatcher_earliestStopWins() {
    var m = StopStringMatcher(["cd", "b"])
    XCTAssertEqual(m.push("abcd"), "a")
    XCTAssertEqual(m.matched, "b")
  }

  // MARK: - UTF-8 streaming with the shared SmolLM2 tokenizer

  /// shared/ sits beside the repository (CI clones it there too).
  static let tokenizerURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../../../shared/models/smollm2-135m-instruct/tokenizer.json").standardized

  func test_incrementalDecoding_emitsCompleteCharactersOnly() throws {
    guard FileManager.default.fileExists(atPath: Self.tokenizerURL.path) else {
      throw XCTSkip("shared SmolLM2 tokenizer not present")
    }
    let tok = try Tokenizer(contentsOf: Self.tokenizerURL)
    let text = "Crabs 🦀 and façade — 日本語 ok"
    let ids = tok.encode(text, addSpecialTokens: false)
    XCTAssertTrue(ids.contains { tok.decode([$0]).contains("\u{FFFD}") },
                  "fixture check: some character must be split over byte tokens")
    var d = IncrementalDecoder(tok)
    var pieces: [String] = []
    for id in ids { pieces.append(d.append(id)) }
    pieces.append(d.flush())
    XCTAssertFalse(pieces.contains { $0.contains("\u{FFFD}") }, "partial character emitted: \(pieces)")
    XCTAssertEqual(pieces.joined(), tok.decode(ids))
    XCTAssertEqual(pieces.joined(), text)
  }
}
