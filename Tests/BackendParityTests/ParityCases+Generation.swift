import VKFCore
import VKFTestSupport

extension ParityTable {
  /// The generation ops: the left-padding key mask of `causalSoftmax`, and `sampleTokens`
  /// greedy, with a repetition penalty, top-k, top-p, both, and plain sampling — three steps
  /// each, so presence marks accumulate and every step draws a new u. Logits are spread over
  /// ±8 so the cuts and the draws fall far from rounding ties; ids must match exactly.
  static var generation: [ParityCase] {
    let settings: [SamplingParameters] = [
      SamplingParameters(temperature: 0, repetitionPenalty: 1.3),
      SamplingParameters(temperature: 0.7, topK: 5, seed: 11),
      SamplingParameters(temperature: 1, topP: 0.8, seed: 12),
      SamplingParameters(temperature: 1.3, topK: 40, topP: 0.9, repetitionPenalty: 1.2, seed: 0xDEAD_BEEF_0000_0001),
      SamplingParameters(temperature: 1, seed: 13),
    ]
    let masked = [0, 4].map { window in
      ParityCase(op: .causalSoftmax, name: "3 sequences × 2 heads × (4×9), key starts 0, 3, 7, window \(window)",
                 tolerance: .reduction) { b in
        let x = try b.random([3, 2, 4, 9], seed: 41, -5, 5), out = try b.allocate([3, 2, 4, 9])
        try b.causalSoftmax(x, scale: 0.5, window: window, keyStarts: try b.ints([0, 3, 7]), into: out)
        return [try b.floats(out)]
      }
    }
    let entropies = [Float(0), 0.8].map { t in
      ParityCase(op: .sampleTokens, name: "entropy at T \(t), 6 × 1000", tolerance: .reduction) { b in
        let logits = try b.random([6, 1000], seed: 320, -8, 8), ids = try b.allocate([6], .i32)
        let h = try b.allocate([6])
        try b.sampleTokens(logits: logits, presence: nil, parameters: SamplingParameters(temperature: t, seed: 1),
                           into: ids, entropy: h)
        return [try b.floats(h)]
      }
    }
    return masked + entropies + settings.enumerated().map { i, p in
      ParityCase(op: .sampleTokens, name: "T \(p.temperature) k \(p.topK) p \(p.topP) penalty \(p.repetitionPenalty), 6 × 1000",
                 tolerance: .exact) { b in
        let rows = 6, vocab = 1000
        let logits = try b.random([rows, vocab], seed: 300 + UInt64(i), -8, 8)
        let presence = try b.zeros([rows, vocab], .i32), ids = try b.allocate([rows], .i32)
        var out: [[Float]] = []
        for step in 0..<3 {
          var q = p; q.step = UInt32(step)
          try b.sampleTokens(logits: logits, presence: presence, parameters: q, into: ids)
          out.append(try b.download(ids, as: Int32.self).map(Float.init))
        }
        let seen = try b.download(presence, as: Int32.self)
        return out + [seen.map(Float.init)]
      }
    }
  }
}
