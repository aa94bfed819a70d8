import Foundation
import VKFCore

// MARK: - Fused attention (blocked: no T×T buffer)
// Legend: B batch, NH/KVH query/kv heads, G = NH/KVH, T tokens, HS head size, L a row's real
// keys (`AttentionMask.keyLengths`, else T). Query head h reads kv head h / G. Queries are
// taken `queryBlock` rows at a time: block [i0, i1) sees keys k0 ..< k1 (causal: k0 = 0, or
// i0 + 1 − window with a sliding window, and k1 = min(i1, L); bidirectional: 0 ..< L), so
// its scores are a (rows, k1 − k0) panel in scratch, never (T, T). Row i sees `visibleKeys`.

extension CPUBackend {
  /// Query rows per block: the scratch is 2 · queryBlock · T floats (one panel in the
  /// forward, two in the backward), and 128-row panels keep sgemm efficient.
  static let attentionQueryBlock = 128

  /// Keys query i sees: j ≤ i, and j > i − window with a window (> 0).
  static func visibleKeys(_ i: Int, window: Int) -> Range<Int> {
    (window > 0 ? max(0, i + 1 - window) : 0)..<(i + 1)
  }

  /// Keys query i sees under `mask` with `keys` real keys (possibly none).
  static func visibleKeys(_ i: Int, mask: AttentionMask, keys: Int) -> Range<Int> {
    guard mask.causal else { return 0..<keys }
    let r = visibleKeys(i, window: mask.window)
    return r.lowerBound..<max(r.lowerBound, min(r.upperBound, keys))
  }

  /// Each batch row's real key count, checked to lie in [1, T].
  private func keyCounts(_ mask: AttentionMask, batch: Int, tokens: Int, op: Op) throws -> [Int] {
    guard let lengths = mask.keyLengths else { return Array(repeating: tokens, count: batch) }
    let p = i32(lengths)
    return try (0..<batch).map { b in
      let n = Int(p[b])
      guard n >= 1, n <= tokens else {
        throw VKFError.outOfRange(op: op.rawValue, detail: "key length \(n) of batch row \(b) is outside [1, \(tokens)]")
      }
      return n
    }
  }

  /// The keys a block of queries [i0, i0 + rows) sees, as one panel range.
  private static func panelKeys(_ i0: Int, rows: Int, mask: AttentionMask, keys: Int) -> Range<Int> {
    guard mask.causal else { return 0..<keys }
    let lo = visibleKeys(i0, window: mask.window).lowerBound
    return lo..<max(lo, min(i0 + rows, keys))
  }

  public func attention(q: Tensor, k: Tensor, v: Tensor, scale: Float, mask: AttentionMask, into out: Tensor,
                        lse: Tensor) throws {
    try validate(.attention, q, k, v, out, lse, mask.keyLengths)
    let g = try ShapeCheck.attention(.attention, q: q, k: k, v: v, out: out, lse: lse)
    try ShapeCheck.attentionMask(.attention, mask, batch: g.batch)
    let (t, hs, softcap) = (g.tokens, g.headDim, mask.softcap)
    guard t > 0, hs > 0 else { return }
    let keyCounts = try keyCounts(mask, batch: g.batch, tokens: t, op: .attention)
    let block = min(Self.attentionQueryBlock, t)
    let panel = try scratch.floats(block * t)
    let pq = f32(q), pk = f32(k), pv = f32(v), po = f32(out), pl = f32(lse)
    for bh in 0..<(g.batch * g.heads) {
      let kv = (bh / g.heads) * g.kvHeads + (bh % g.heads) / g.group
      let kb = pk + kv * t * hs, vb = pv + kv * t * hs, keys = keyCounts[bh / g.heads]
      for i0 in stride(from: 0, to: t, by: block) {
        let rows = min(block, t - i0), row0 = bh * t + i0
        let span = Self.panelKeys(i0, rows: rows, mask: mask, keys: keys)
        let (k0, width) = (span.lowerBound, span.count)
        guard width > 0 else {  // no row of the block sees a key
          (po + row0 * hs).update(repeating: 0, count: rows * hs)
          (pl + row0).update(repeating: 0, count: rows)
          continue
        }
        // S (rows, width) = scale · Q_blk · K[span]ᵀ
        CPUBackend.sgemm(false, true, m: rows, n: width, k: hs, alpha: scale, a: pq + row0 * hs, lda: hs,
                         b: kb + k0 * hs, ldb: hs, beta: 0, c: panel, ldc: width)
        // P = exp(S − m) / l over the visible keys (capped first), lse = m + log l; 0 elsewhere.
        let pp = UncheckedSendable(panel), ppl = UncheckedSendable(pl + row0)
        CPUParallel.forRanges(rows, cost: width) { range in
          for r in range {
            let vis = Self.visibleKeys(i0 + r, mask: mask, keys: keys)
            let row = pp.value + r * width, lo = vis.lowerBound - k0, n = vis.count
            guard n > 0 else {
              row.update(repeating: 0, count: width)
              ppl.value[r] = 0
              continue
            }
            let s = row + lo
            if softcap > 0 { for j in 0..<n { s[j] = CPUMath.softcap(s[j], softcap) } }
            let m = CPUMath.max(s, n)
            for j in 0..<n { s[j] = CPUMath.exp(s[j] - m) }
            let l = CPUMath.sum(s, n)
            let inv = Float(1 / l)
            for j in 0..<n { s[j] *= inv }
            row.update(repeating: 0, count: lo)
            (s + n).update(repeating: 0, count: width - lo - n)
            ppl.value[r] = m + Float(log(l))
          }
        }
        // O_blk (rows, HS) = P · V[span]
        CPUBackend.sgemm(false, false, m: rows, n: hs, k: width, alpha: 1, a: panel, lda: width,
                         b: vb + k0 * hs, ldb: hs, beta: 0, c: po + row0 * hs, ldc: hs)
      }
    }
  }

  public func attentionBackward(_ dOut: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor, lse: Tensor,
                                scale: Float, mask: AttentionMask, delta: Tensor, dq: Tensor, dk: Tensor,
                                dv: Tensor) throws {
    try validate(.attentionBackward, dOut, q, k, v, out, lse, delta, dq, dk, dv, mask.keyLengths)
    let g = try ShapeCheck.attentionBackward(dOut: dOut, q: q, k: k, v: v, out: out, lse: lse, delta: delta,
                                             dq: dq, dk: dk, dv: dv)
    try ShapeCheck.attentionMask(.attentionBackward, mask, batch: g.batch)
    let (t, hs, softcap) = (g.tokens, g.headDim, mask.softcap)
    f32(dk).update(repeating: 0, count: dk.count)
    f32(dv).update(repeating: 0, count: dv.count)
    guard t > 0, hs > 0 else { return }
    let keyCounts = try keyCounts(mask, batch: g.batch, tokens: t, op: .attentionBackward)
    let block = min(Self.attentionQueryBlock, t)
    let scratchBase = try scratch.floats(2 * block * t)
    let probs = scratchBase, grads = scratchBase + block * t
    let pdo = f32(dOut), pq = f32(q), pk = f32(k), pv = f32(v), po = f32(out), pl = f32(lse)
    let pd = f32(delta), pdq = f32(dq), pdk = f32(dk), pdv = f32(dv)
    // dk and dv of a kv head sum over its G query heads: each (b, kv head) is one serial pass.
    for bkv in 0..<(g.batch * g.kvHeads) {
      let kb = pk + bkv * t * hs, vb = pv + bkv * t * hs, dkb = pdk + bkv * t * hs, dvb = pdv + bkv * t * hs
      let (b, kvh) = (bkv / g.kvHeads, bkv % g.kvHeads)
      let keys = keyCounts[b]
      for member in 0..<g.group {
        let bh = b * g.heads + kvh * g.group + member
        for i0 in stride(from: 0, to: t, by: block) {
          let rows = min(block, t - i0), row0 = bh * t + i0
          let qBlk = pq + row0 * hs, doBlk = pdo + row0 * hs
          let span = Self.panelKeys(i0, rows: rows, mask: mask, keys: keys)
          let (k0, width) = (span.lowerBound, span.count)
          let rowsDelta = UncheckedSendable(pd + row0)
          guard width > 0 else {
            (pdq + row0 * hs).update(repeating: 0, count: rows * hs)
            rowsDelta.value.update(repeating: 0, count: rows)
            continue
          }
          // S = scale · Q·K[span]ᵀ, then P = exp(cap(S) − lse) (masked); dP = dO · V[span]ᵀ.
          CPUBackend.sgemm(false, true, m: rows, n: width, k: hs, alpha: scale, a: qBlk, lda: hs,
                           b: kb + k0 * hs, ldb: hs, beta: 0, c: probs, ldc: width)
          CPUBackend.sgemm(false, true, m: rows, n: width, k: hs, alpha: 1, a: doBlk, lda: hs,
                           b: vb + k0 * hs, ldb: hs, beta: 0, c: grads, ldc: width)
          // D_i = dO_i · O_i; dS = scale · P ⊙ (dP − D) (⊙ the cap's derivative with a softcap).
          let pp = UncheckedSendable(probs), pg = UncheckedSendable(grads)
          let rowsLse = UncheckedSendable(UnsafePointer(pl + row0))
          let rowsO = UncheckedSendable(UnsafePointer(po + row0 * hs)), rowsDO = UncheckedSendable(UnsafePointer(doBlk))
          CPUParallel.forRanges(rows, cost: width) { range in
            for r in range {
              let vis = Self.visibleKeys(i0 + r, mask: mask, keys: keys)
              let (lo, hi) = (vis.lowerBound - k0, vis.lowerBound - k0 + vis.count)
              let p = pp.value + r * width, ds = pg.value + r * width
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
              (p + hi).update(repeating: 0, count: width - hi)
              (ds + hi).update(repeating: 0, count: width - hi)
            }
          }
          // dQ_blk = dS · K[span]; dK[span] += dSᵀ · Q_blk; dV[span] += Pᵀ · dO_blk.
          CPUBackend.sgemm(false, false, m: rows, n: hs, k: width, alpha: 1, a: grads, lda: width,
                           b: kb + k0 * hs, ldb: hs, beta: 0, c: pdq + row0 * hs, ldc: hs)
          CPUBackend.sgemm(true, false, m: width, n: hs, k: rows, alpha: 1, a: grads, lda: width,
                           b: qBlk, ldb: hs, beta: 1, c: dkb + k0 * hs, ldc: hs)
          CPUBackend.sgemm(true, false, m: width, n: hs, k: rows, alpha: 1, a: probs, lda: width,
                           b: doBlk, ldb: hs, beta: 1, c: dvb + k0 * hs, ldc: hs)
        }
      }
    }
  }
}
