import Foundation
import XCTest
import VKFModel
import VKFTestSupport

/// Sampler semantics against transformers' logits processors, and seeding.
final class GenerationSamplingTests: XCTestCase {
  /// Logits with these probabilities (log p; softmax gives p back up to rounding).
  private func logits(_ p: [Double]) -> [Float] { p.map { Float(log($0)) } }
  private func kept(_ l: [Float]) -> Set<Int> { Set(l.indices.filter { l[$0] > -.infinity }) }

  func test_topP_keepsSmallestSetReachingP_asTransformers() {
    // Probabilities 0.05, 0.5, 0.15, 0.3 (shuffled so sorting matters). Boundaries of the
    // cumulative sums (0.5, 0.8, 0.95) are avoided: Float(p) rounding decides ties there.
    let l = logits([0.05, 0.5, 0.15, 0.3])
    let cases: [(p: Float, keep: Set<Int>)] = [
      (0.1, [1]), (0.45, [1]), (0.75, [1, 3]), (0.9, [1, 3, 2]), (0.99, [1, 3, 2, 0]), (1, [0, 1, 2, 3]),
    ]
    for c in cases {
      var x = l
      Sampler.topPFilter(&x, p: c.p)
      XCTAssertEqual(kept(x), c.keep, "top_p \(c.p)")
    }
  }

  func test_topK_keepsKLargest_andTiesWithTheKth() {
    var x: [Float] = [1, 5, 3, 3, 0]
    Sampler.topKFilter(&x, k: 2)
    XCTAssertEqual(kept(x), [1, 2, 3])  // 3 ties with the 2nd largest: kept, as torch's `<` test
    var y: [Float] = [1, 5, 3, 2, 0]
    Sampler.topKFilter(&y, k: 1)
    XCTAssertEqual(kept(y), [1])
  }

  func test_repetitionPenalty_dividesPositive_multipliesNegative() {
    var x: [Float] = [2, -2, 2]
    Sampler.applyRepetitionPenalty(&x, penalty: 2, tokens: [0, 1, 1])
    XCTAssertEqual(x, [1, -4, 2])
  }

  func test_topK1_equalsGreedy_forAnySeed() {
    let l = TestData.uniform(97, seed: 7, -3, 3)
    let greedy = Sampler.argmax(l)
    for seed in UInt64(0)..<20 {
      var s = Sampler(config: GenerationConfig(temperature: 1.3, topK: 1, seed: seed))
      XCTAssertEqual(s.next(logits: l, context: []), greedy)
    }
  }

  func test_temperatureZero_isGreedy_ignoringSeedAndFilters() {
    let l = TestData.uniform(97, seed: 8, -3, 3)
    for seed in UInt64(0)..<5 {
      var s = Sampler(config: GenerationConfig(temperature: 0, topK: 50, topP: 0.5, seed: seed))
      XCTAssertEqual(s.next(logits: l, context: []), Sampler.argmax(l))
    }
  }

  func test_sameSeed_sameIDs_differentSeed_differentIDs() {
    let flat = [Float](repeating: 0, count: 97)
    func draws(_ seed: UInt64) -> [Int] {
      var s = Sampler(config: GenerationConfig(temperature: 1, seed: seed))
      return (0..<32).map { _ in s.next(logits: flat, context: []) }
    }
    XCTAssertEqual(draws(1), draws(1))
    XCTAssertNotEqual(draws(1), draws(2))
    XCTAssertGreaterThan(Set(draws(3)).count, 16, "a flat distribution should spread draws")
  }

  func test_sampling_followsTheDistribution() {
    // 20 000 draws from (0.7, 0.2, 0.1): each frequency within 0.015 (≈ 4.6σ for p = 0.2).
    let l = logits([0.7, 0.2, 0.1])
    var s = Sampler(config: GenerationConfig(temperature: 1, seed: 42))
    var counts = [0, 0, 0]
    for _ in 0..<20_000 { counts[s.next(logits: l, context: [])] += 1 }
    for (i, p) in [0.7, 0.2, 0.1].enumerated() {
      XCTAssertEqual(Double(counts[i]) / 20_000, p, accuracy: 0.015)
    }
  }

  func test_config_decodesHFKeys_withDefaults() throws {
    let json = #"{"max_new_tokens": 20, "top_p": 0.9, "stop_strings": ["\n\n"]}"#
    let c = try JSONDecoder().decode(GenerationConfig.self, from: Data(json.utf8))
    XCTAssertEqual(c, GenerationConfig(maxNewTokens: 20, topP: 0.9, stopStrings: ["\n\n"]))
    XCTAssertEqual(try JSONDecoder().decode(GenerationConfig.self, from: JSONEncoder().encode(c)), c)
  }

  func test_config_validate_rejectsOutOfRange() {
    let bad = [GenerationConfig(maxNewTokens: 0), GenerationConfig(temperature: -1),
               GenerationConfig(topK: -1), GenerationConfig(topP: 0), GenerationConfig(topP: 1.5),
               GenerationConfig(repetitionPenalty: 0)]
    for c in bad { XCTAssertThrowsError(try c.validate(), "\(c)") }
    XCTAssertNoThrow(try GenerationConfig().validate())
  }
}
