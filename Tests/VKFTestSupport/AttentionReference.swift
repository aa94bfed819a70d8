import Foundation

/// Causal attention in Double, the textbook way (full T×T probabilities per head): the
/// reference the fused kernels are checked against. Layouts as `Backend.attention`: q, dOut
/// (B, NH, T, HS); k, v (B, KVH, T, HS); query head h reads kv head h / (NH / KVH).
public enum AttentionReference {
  public struct Shape {
    public var batch: Int, heads: Int, kvHeads: Int, tokens: Int, headDim: Int
    /// Sliding window: query i sees keys i − window < j ≤ i; 0 = every j ≤ i.
    public var window: Int
    /// Score soft-capping: s → softcap·tanh(s / softcap) after the scale; 0 = none.
    public var softcap: Double
    /// false: every query sees every (real) key (encoders).
    public var causal: Bool
    /// Per batch row, the real keys (right padding after them); empty: all T.
    public var keyLengths: [Int]
    public init(batch: Int, heads: Int, kvHeads: Int, tokens: Int, headDim: Int, window: Int = 0,
                softcap: Double = 0, causal: Bool = true, keyLengths: [Int] = []) {
      self.batch = batch; self.heads = heads; self.kvHeads = kvHeads; self.tokens = tokens; self.headDim = headDim
      self.window = window; self.softcap = softcap; self.causal = causal; self.keyLengths = keyLengths
    }
    public var qCount: Int { batch * heads * tokens * headDim }
    public var kvCount: Int { batch * kvHeads * tokens * headDim }
  }

  /// out, lse, and the gradients dq, dk, dv of Σ dOut ⊙ out.
  public static func run(_ s: Shape, q: [Float], k: [Float], v: [Float], dOut: [Float], scale: Float)
    -> (out: [Float], lse: [Float], dq: [Float], dk: [Float], dv: [Float])
  {
    let (t, hs, g) = (s.tokens, s.headDim, s.heads / s.kvHeads)
    var out = [Float](repeating: 0, count: s.qCount), lse = [Float](repeating: 0, count: s.batch * s.heads * t)
    var dq = [Float](repeating: 0, count: s.qCount)
    var dk = [Double](repeating: 0, count: s.kvCount), dv = [Double](repeating: 0, count: s.kvCount)
    for bh in 0..<(s.batch * s.heads) {
      let kv = (bh / s.heads) * s.kvHeads + (bh % s.heads) / g
      let qb = bh * t * hs, kb = kv * t * hs
      let keys = s.keyLengths.isEmpty ? t : s.keyLengths[bh / s.heads]
      for i in 0..<t {
        // Visible keys lo...last, kept at index j − lo.
        let lo = s.causal && s.window > 0 ? max(0, i + 1 - s.window) : 0
        let last = min(s.causal ? i : t - 1, keys - 1)
        guard last >= lo else { lse[bh * t + i] = 0; continue }  // no key: zero output and gradients
        var scores = [Double](repeating: 0, count: last + 1 - lo)
        for j in lo...last {
          var d = 0.0
          for c in 0..<hs { d += Double(q[qb + i * hs + c]) * Double(k[kb + j * hs + c]) }
          scores[j - lo] = Double(scale) * d
          if s.softcap > 0 { scores[j - lo] = s.softcap * tanh(scores[j - lo] / s.softcap) }
        }
        let m = scores.max() ?? 0
        let l = scores.reduce(0) { $0 + exp($1 - m) }
        let p = scores.map { exp($0 - m) / l }
        lse[bh * t + i] = Float(m + log(l))
        var o = [Double](repeating: 0, count: hs)
        for j in lo...last { for c in 0..<hs { o[c] += p[j - lo] * Double(v[kb + j * hs + c]) } }
        for c in 0..<hs { out[qb + i * hs + c] = Float(o[c]) }
        // Backward of Σ dOut·out through this row.
        var dp = [Double](repeating: 0, count: last + 1 - lo)
        for j in lo...last { for c in 0..<hs { dp[j - lo] += Double(dOut[qb + i * hs + c]) * Double(v[kb + j * hs + c]) } }
        let dot = zip(p, dp).reduce(0) { $0 + $1.0 * $1.1 }
        for j in lo...last {
          let u = s.softcap > 0 ? scores[j - lo] / s.softcap : 0
          let ds = Double(scale) * p[j - lo] * (dp[j - lo] - dot) * (1 - u * u)
          for c in 0..<hs {
            dq[qb + i * hs + c] += Float(ds * Double(k[kb + j * hs + c]))
            dk[kb + j * hs + c] += ds * Double(q[qb + i * hs + c])
            dv[kb + j * hs + c] += p[j - lo] * Double(dOut[qb + i * hs + c])
          }
        }
      }
    }
    return (out, lse, dq, dk.map { Float($0) }, dv.map { Float($0) })
  }
}
