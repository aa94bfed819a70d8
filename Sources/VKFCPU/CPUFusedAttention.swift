import Foundation
import VKFCore

// MARK: - Fused causal attention (blocked: no T×T buffer)
// Legend: B batch, NH/KVH query/kv heads, G = NH/KVH, T tokens, HS head size. Query head h
// reads kv head h / G. Queries are taken `queryBlock` rows at a time: block [i0, i1) sees keys
// k0 ..< i1 (k0 = 0, or i0 + 1 − window with a sliding window), so its scores are a
// (rows, i1 − k0) panel in scratch, never (T, T). Row i sees keys [lo(i), i] (`visibleKeys`).

extension CPUBackend {
  /// Query rows per block: the scratch is 2 · queryBlock · T floats (one panel in the
  /// forward, two in the backward), and 128-row panels keep sgemm efficient.
  static let attentionQueryBlock = 128

  /// Keys query i sees: j ≤ i, and j > i − window with a window (> 0).
  static func visibleKeys(_ i: Int, window: Int) -> Range<Int> {
    (window > 0 ? max(0, i + 1 - window) : 0)..<(i + 1)
  }

  public func attention(q: Tensor, k: Tensor, v: Tensor, scale: Float, window: Int, softcap: Float,
                        into out: Tensor, lse: Tensor) throws {
    try validate(.attention, q, k, v, out, lse)
    let g = try ShapeCheck.attention(.attention, q: q, k: k, v: v, out: out, lse: lse)
    try ShapeCheck.window(.attention, window)
    try ShapeCheck.softcap(.attention, softcap)
    let (t, hs) = (g.tokens, g.headDim)
    guard t > 0, hs > 0 else { return }
    let block = min(Self.attentionQueryBlock, t)
    let panel = try scratch.floats(block * t)
    let pq = f32(q), pk = f32(k), pv = f32(v), po = f32(out), pl = f32(lse)
    for bh in 0..<(g.batch * g.heads) {
      let kv = (bh / g.heads) * g.kvHeads + (bh % g.heads) / g.group
      let kb = pk + kv * t * hs, vb = pv + kv * t * hs
      for i0 in stride(from: 0, to: t, by: block) {
        let rows = min(block, t - i0), k0 = Self.visibleKeys(i0, window: window).lowerBound
        let keys = i0 + rows - k0
        let row0 = bh * t + i0
        // S (rows, keys) = scale · Q_blk · K[k0..<i1]ᵀ
        CPUBackend.sgemm(false, true, m: rows, n: keys, k: hs, alpha: scale, a: pq + row0 * hs, lda: hs,
                         b: kb + k0 * hs, ldb: hs, beta: 0, c: panel, ldc: keys)
        // P = exp(S − m) / l over the visible keys, lse = m + log l; 0 elsewhere.
        let pp = UncheckedSendable(panel), ppl = UncheckedSendable(pl + row0)
        CPUParallel.forRanges(rows, cost: keys) { range in
          for r in range {
            let vis = Self.visibleKeys(i0 + r, window: window)
            let row = pp.value + r * keys, s = row + (vis.lowerBound - k0), n = vis.count
            if softcap > 0 { for j in 0..<n { s[j] = CPUMath.softcap(s[j], softcap) } }
            let m = CPUMath.max(s, n)
            for j in 0..<n { s[j] = CPUMath.exp(s[j] - m) }
            let l = CPUMath.sum(s, n)
            let inv = Float(1 / l)
            for j in 0..<n { s[j] *= inv }
            row.update(repeating: 0, count: vis.lowerBound - k0)
            (s + n).update(repeating: 0, count: keys - (vis.upperBound - k0))
            ppl.value[r] = m + Float(log(l))
          }
        }
        // O_blk (rows, HS) = P · V[k0..<i1]
        CPUBackend.sgemm(false, false, m: rows, n: hs, k: keys, alpha: 1, a: panel, lda: keys,
                         b: vb + k0 * hs, ldb: hs, beta: 0, c: po + row0 * hs, ldc: hs)
      }
    }
  }

  public func attentionBackward(_ dOut: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                                scale: Float, window: Int, softcap: Float, delta: Tensor, dq: Tensor,
                                dk: Tensor, dv: Tensor) throws {
    try validate(.attentionBackward, dOut, q, k, v, out, lse, delta, dq, dk, dv)
    let g = try ShapeCheck.attentionBackward(dOut: dOut, q: q, k: k, v: v, out: out, lse: lse, delta: delta,
                                             dq: dq, dk: dk, dv: dv)
    try ShapeCheck.window(.attentionBackward, window)
    try ShapeCheck.softcap(.attentionBackward, softcap)
    let (t, hs) = (g.tokens, g.headDim)
    f32(dk).update(repeating: 0, count: dk.count)
    f32(dv).update(repeating: 0, count: dv.count)
    guard t > 0, hs > 0 else { return }
    let block = min(Self.attentionQueryBlock, t)
    let scratchBase = try scratch.floats(2 * block * t)
    let probs = scratchBase, grads = scratchBase + block * t
    let pdo = f32(dOut), pq = f32(q), pk = f32(k), pv = f32(v), po = f32(out), pl = f32(lse)
    let pd = f32(delta), pdq = f32(dq), pdk = f32(dk), pdv = f32(dv)
    // dk and dv of a kv head sum over its G query heads: each (b, kv head) is one serial pass.
    for bkv in 0..<(g.batch * g.kvHeads) {
      let kb = pk + bkv * t * hs, vb = pv + bkv * t * hs, dkb = pdk + bkv * t * hs, dvb = pdv + bkv * t * hs
      let (b, kvh) = (bkv / g.kvHeads, bkv % g.kvHeads)
      for member in 0..<g.group {
        let bh = b * g.heads + kvh * g.group + member
        for i0 in stride(from: 0, to: t, by: block) {
          let rows = min(block, t - i0), k0 = Self.visibleKeys(i0, window: window).lowerBound
          let keys = i0 + rows - k0
          let row0 = bh * t + i0
          let qBlk = pq + row0 * hs, doBlk = pdo + row0 * hs
          // S = scale · Q·K[k0..<i1]ᵀ, then P = exp(S − lse) (masked); dP = dO · V[k0..<i1]ᵀ.
          CPUBackend.sgemm(false, true, m: rows, n: keys, k: hs, alpha: scale, a: qBlk, lda: hs,
                           b: kb + k0 * hs, ldb: hs, beta: 0, c: probs, ldc: keys)
          CPUBackend.sgemm(false, true, m: rows, n: keys, k: hs, alpha: 1, a: doBlk, lda: hs,
                           b: vb + k0 * hs, ldb: hs, beta: 0, c: grads, ldc: keys)
          // D_i = dO_i · O_i; dS = scale · P ⊙ (dP − D) (⊙ the cap's derivative with a softcap).
          let pp = UncheckedSendable(probs), pg = UncheckedSendable(grads)
          let rowsDelta = UncheckedSendable(pd + row0), rowsLse = UncheckedSendable(UnsafePointer(pl + row0))
          let rowsO = UncheckedSendable(UnsafePointer(po + row0 * hs)), rowsDO = UncheckedSendable(UnsafePointer(doBlk))
          CPUParallel.forRanges(rows, cost: keys) { range in
            for r in range {
              let vis = Self.visibleKeys(i0 + r, window: window)
              let (lo, hi) = (vis.lowerBound - k0, vis.upperBound - k0)
              let p = pp.value + r * keys, ds = pg.value + r * keys
              let d = Float(CPUMath.dot(rowsDO.value + r * hs, rowsO.value + r * hs, hs))
              rowsDelta.value[r] = d
              let l = rowsLse.value[r]
              if softcap > 0 {
                // Through the cap: d/ds cap·tanh(s/cap) = 1 − (capped/cap)².
                for j in lo..<hi {
                  let c = CPUMath.softcap(p[j], softcap), u = c / softcap
                  p[j] = CPUMath.exp(c - l)
                  ds[j] = scale * p[j] * (ds[j] - d) * (1 - u * u)
                }
              } else {
                for j in lo..<hi {
                  p[j] = CPUMath.exp(p[j] - l)
                  ds[j] = scale * p[j] * (ds[j] - d)
                }
              }
              p.update(repeating: 0, count: lo)
              ds.update(repeating: 0, count: lo)
              (p + hi).update(repeating: 0, count: keys - hi)
              (ds + hi).update(repeating: 0, count: keys - hi)
            }
          }
          // dQ_blk = dS · K[k0..<i1]; dK[k0..<i1] += dSᵀ · Q_blk; dV[k0..<i1] += Pᵀ · dO_blk.
          CPUBackend.sgemm(false, false, m: rows, n: hs, k: keys, alpha: 1, a: grads, lda: keys,
                           b: kb + k0 * hs, ldb: hs, beta: 0, c: pdq + row0 * hs, ldc: hs)
          CPUBackend.sgemm(true, false, m: keys, n: hs, k: rows, alpha: 1, a: grads, lda: keys,
                           b: qBlk, ldb: hs, beta: 1, c: dkb + k0 * hs, ldc: hs)
          CPUBackend.sgemm(true, false, m: keys, n: hs, k: rows, alpha: 1, a: probs, lda: keys,
                           b: doBlk, ldb: hs, beta: 1, c: dvb + k0 * hs, ldc: hs)
        }
      }
    }
  }
}
