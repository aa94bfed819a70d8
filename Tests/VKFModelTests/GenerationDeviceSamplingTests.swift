import XCTest
import VKFCore
import VKFModel
import VKFTestSupport
@testable import VKFCPU

/// `Backend.sampleTokens` (the device sampler, here its CPU twin) against the one-sequence
/// `Sampler`'s transformers logits processors: the same greedy pick, the same top-k and top-p
/// sets, and draws that follow the kept softmax. (The shader equals the twin: parity suite.)
final class GenerationDeviceSamplingTests: XCTestCase {
  /// Draws per token in the frequency check, and how many binomial standard deviations a
  /// frequency may stray (4.5σ: a false alarm ≈ 7e-6 per token, 6 tokens per case).
  static let draws = 20_000
  static let sigmas = 4.5

  private var cpu: CPUBackend { TestBackends.cpu }

  func test_greedy_equalsSamplerArgmax_withRepetitionPenalty() throws {
    let rows = 5, vocab = 300
    let logits = TestData.uniform(rows * vocab, seed: 1, -6, 6)
    var marks = [Int32](repeating: 0, count: rows * vocab)
    for r in 0..<rows { for j in stride(from: r, to: vocab, by: 7) { marks[r * vocab + j] = 1 } }
    let ids = try cpu.allocate([rows], .i32), presence = try cpu.tensor(marks, shape: [rows, vocab])
    try cpu.sampleTokens(logits: try cpu.tensor(logits, shape: [rows, vocab]), presence: presence,
                         parameters: SamplingParameters(temperature: 0, repetitionPenalty: 1.4), into: ids)
    let got = try cpu.download(ids, as: Int32.self), after = try cpu.download(presence, as: Int32.self)
    for r in 0..<rows {
      var l = Array(logits[(r * vocab)..<((r + 1) * vocab)])
      Sampler.applyRepetitionPenalty(&l, penalty: 1.4, tokens: (0..<vocab).filter { marks[r * vocab + $0] != 0 })
      XCTAssertEqual(Int(got[r]), Sampler.argmax(l), "row \(r)")
      XCTAssertEqual(after[r * vocab + Int(got[r])], 1, "the drawn token is marked")
    }
  }

  /// The entropy output is H(softmax(logits / T)) of the unpenalised, unfiltered row.
  func test_entropy_ofTheTemperedSoftmax() throws {
    let vocab = 500, logits = TestData.uniform(2 * vocab, seed: 9, -6, 6)
    for t: Float in [0, 0.7, 1.5] {
      let h = try cpu.allocate([2]), ids = try cpu.allocate([2], .i32)
      try cpu.sampleTokens(logits: try cpu.tensor(logits, shape: [2, vocab]), presence: nil,
                           parameters: SamplingParameters(temperature: t, topK: 3, repetitionPenalty: 1), into: ids,
                           entropy: h)
      let got = try cpu.floats(h)
      for r in 0..<2 {
        let p = Sampler.softmax(logits[(r * vocab)..<((r + 1) * vocab)].map { $0 / (t > 0 ? t : 1) })
        let want = -p.reduce(0) { $0 + ($1 > 0 ? $1 * log($1) : 0) }
        XCTAssertEqual(Double(got[r]), want, accuracy: 1e-5, "T \(t) row \(r)")
      }
    }
  }

  /// Top-k keeps exactly `Sampler.topKFilter`'s tokens, ties with the k-th included.
  func test_topK_keepsTheSamplersSet_tiesIncluded() throws {
    for (seed, k) in [(UInt64(2), 1), (3, 5), (4, 17), (5, 299)] {
      // Values on a coarse grid so ties are common.
      let g = TestData.uniform(300, seed: seed, -4, 4).map { ($0 * 4).rounded() / 4 }
      var reference = g
      Sampler.topKFilter(&reference, k: k)
      let threshold = CPUBackend.kthLargestKey(g.map(TokenSampling.orderKey), k: k)
      let kept = g.indices.filter { TokenSampling.orderKey(g[$0]) >= threshold }
      XCTAssertEqual(kept, reference.indices.filter { reference[$0].isFinite }, "k \(k)")
    }
  }

  /// Top-p keeps exactly `Sampler.topPFilter`'s tokens (distinct logits), also where the
  /// sort skips the tokens below (1 − p)/V of the mass (a 5000-token vocabulary).
  func test_topP_keepsTheSamplersSet() throws {
    for (seed, vocab, p) in [(UInt64(6), 50, Float(0.5)), (7, 50, 0.95), (8, 5000, 0.9), (9, 5000, 0.99), (10, 20, 0.01)] {
      let g = TestData.uniform(vocab, seed: seed, -9, 9)
      var reference = g
      Sampler.topPFilter(&reference, p: p)
      let keys = g.map(TokenSampling.orderKey)
      let low = CPUBackend.topPLowestKey(g, keys, lowestKept: 0, max: g.max()!, topP: p)
      XCTAssertEqual(g.indices.filter { keys[$0] >= low }, reference.indices.filter { reference[$0].isFinite },
                     "V \(vocab), p \(p)")
    }
  }

  /// Draws over many steps follow softmax(logits / T) restricted to the top-k and top-p set.
  func test_draws_followTheKeptSoftmax() throws {
    let logits: [Float] = [2.0, 1.6, 1.5, 0.7, 0.1, -0.4, -1.0, -3.0]
    let (temperature, k, p): (Float, Int, Float) = (0.8, 6, 0.97)
    var filtered = logits.map { $0 / temperature }
    Sampler.topKFilter(&filtered, k: k)
    Sampler.topPFilter(&filtered, p: p)
    let probs = Sampler.softmax(filtered)
    let rows = 50, steps = Self.draws / rows
    let l = try cpu.tensor([Float]((0..<rows).flatMap { _ in logits }), shape: [rows, logits.count])
    let ids = try cpu.allocate([rows], .i32)
    var counts = [Int](repeating: 0, count: logits.count)
    for step in 0..<steps {
      try cpu.sampleTokens(logits: l, presence: nil, parameters: SamplingParameters(
        temperature: temperature, topK: k, topP: p, seed: 42, step: UInt32(step)), into: ids)
      for id in try cpu.download(ids, as: Int32.self) { counts[Int(id)] += 1 }
    }
    let n = Double(rows * steps)
    for (j, q) in probs.enumerated() {
      let sd = (n * q * (1 - q)).squareRoot()
      XCTAssertLessThanOrEqual(abs(Double(counts[j]) - n * q), Self.sigmas * sd + (q == 0 ? 0 : 1),
                               "token \(j): \(counts[j]) draws, expected \(n * q)")
    }
  }
}
