import Foundation
import VKFCore

// MARK: - Token sampling (CPU twin of sample_tokens.comp)
// Legend: R rows, V vocabulary; g = penalised logits / temperature; a token is kept while
// its order key (`TokenSampling.orderKey(g)`) is ≥ the row's lowest kept key.

extension CPUBackend {
  public func sampleTokens(logits: Tensor, presence: Tensor?, parameters p: SamplingParameters, into ids: Tensor,
                           entropy: Tensor?) throws {
    try validate(.sampleTokens, logits, presence, ids, entropy)
    let (rows, vocab) = try ShapeCheck.sampleTokens(logits: logits, presence: presence, parameters: p, ids: ids,
                                                    entropy: entropy)
    let pl = UncheckedSendable(UnsafePointer(f32(logits))), pi = UncheckedSendable(i32(ids))
    let pp = presence.map { UncheckedSendable(i32($0)) }, pe = entropy.map { UncheckedSendable(f32($0)) }
    CPUParallel.forRanges(rows, cost: 16 * vocab) { range in
      var g = [Float](repeating: 0, count: vocab), keys = [UInt32](repeating: 0, count: vocab)
      for r in range {
        if let pe { pe.value[r] = Self.entropy(pl.value + r * vocab, vocab: vocab, temperature: p.temperature) }
        let seen = pp.map { $0.value + r * vocab }
        let id = Self.sampleRow(pl.value + r * vocab, seen: seen.map { UnsafePointer($0) }, vocab: vocab,
                                parameters: p, row: UInt32(truncatingIfNeeded: r), g: &g, keys: &keys)
        pi.value[r] = Int32(id)
        seen?[id] = 1
      }
    }
  }

  /// One row's token: see `SamplingParameters` for the rule.
  static func sampleRow(_ l: UnsafePointer<Float>, seen: UnsafePointer<Int32>?, vocab: Int, parameters p: SamplingParameters,
                        row: UInt32, g: inout [Float], keys: inout [UInt32]) -> Int {
    let penalty = p.repetitionPenalty
    for j in 0..<vocab {
      let v = l[j]
      g[j] = seen != nil && penalty != 1 && seen![j] != 0 ? TokenSampling.penalised(v, penalty) : v
    }
    if p.isGreedy {
      var best = 0
      for j in 1..<vocab where g[j] > g[best] { best = j }
      return best
    }
    var m = -Float.infinity
    for j in 0..<vocab {
      g[j] /= p.temperature
      keys[j] = TokenSampling.orderKey(g[j])
      m = max(m, g[j])
    }
    var low: UInt32 = 0
    if p.topK > 0, p.topK < vocab { low = kthLargestKey(keys, k: p.topK) }
    if p.topP < 1 { low = max(low, topPLowestKey(g, keys, lowestKept: low, max: m, topP: p.topP)) }
    // Inverse CDF over the kept tokens in index order.
    var total = 0.0, last = 0
    for j in 0..<vocab where keys[j] >= low { total += exp(Double(g[j] - m)); last = j }
    let target = Double(TokenSampling.unit(seed: p.seed, row: row, step: p.step)) * total
    var cumulative = 0.0
    for j in 0..<vocab where keys[j] >= low {
      cumulative += exp(Double(g[j] - m))
      if target < cumulative { return j }
    }
    return last
  }

  /// H(softmax(l / T)) = log Σe^z − Σ e^z·z / Σ e^z with z = l/T − max (T = 1 when greedy).
  static func entropy(_ l: UnsafePointer<Float>, vocab: Int, temperature: Float) -> Float {
    let t = Double(temperature > 0 ? temperature : 1)
    var m = -Double.infinity
    for j in 0..<vocab { m = max(m, Double(l[j]) / t) }
    var s = 0.0, w = 0.0
    for j in 0..<vocab {
      let z = Double(l[j]) / t - m, e = exp(z)
      s += e; w += e * z
    }
    return Float(log(s) - w / s)
  }

  /// The k-th largest key (ties counted), by four 8-bit radix passes from the top byte.
  static func kthLargestKey(_ keys: [UInt32], k: Int) -> UInt32 {
    var prefix: UInt32 = 0, prefixMask: UInt32 = 0, remaining = k
    for shift in stride(from: 24, through: 0, by: -8) {
      var hist = [Int](repeating: 0, count: 256)
      for key in keys where key & prefixMask == prefix { hist[Int((key >> UInt32(shift)) & 0xFF)] += 1 }
      var bin = 255
      while hist[bin] < remaining { remaining -= hist[bin]; bin -= 1 }
      prefix |= UInt32(bin) << UInt32(shift)
      prefixMask |= 0xFF << UInt32(shift)
    }
    return prefix
  }

  /// The lowest key top-p keeps among tokens with key ≥ lowestKept: whole value classes are
  /// removed from the least likely up while their mass stays ≤ (1 − p)·Σ. Only tokens above
  /// θ = (1 − p)·Σ / V are sorted: every token at or below θ goes (together ≤ V·θ).
  static func topPLowestKey(_ g: [Float], _ keys: [UInt32], lowestKept: UInt32, max m: Float, topP: Float) -> UInt32 {
    var total = 0.0
    for j in g.indices where keys[j] >= lowestKept { total += exp(Double(g[j] - m)) }
    let cut = Double(1 - topP) * total, theta = cut / Double(g.count)
    var removed = 0.0, low = lowestKept
    var candidates: [(key: UInt32, w: Double)] = []
    for j in g.indices where keys[j] >= lowestKept {
      let w = exp(Double(g[j] - m))
      if w <= theta { removed += w; low = Swift.max(low, keys[j] &+ 1) } else { candidates.append((keys[j], w)) }
    }
    candidates.sort { $0.key < $1.key }
    var i = 0
    while i < candidates.count {
      var j = i, mass = 0.0
      while j < candidates.count, candidates[j].key == candidates[i].key { mass += candidates[j].w; j += 1 }
      guard removed + mass <= cut else { break }
      removed += mass
      low = candidates[i].key &+ 1
      i = j
    }
    return low
  }
}
