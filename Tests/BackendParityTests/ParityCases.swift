import VKFCore
import VKFTestSupport

/// One parity case: builds seeded inputs on a backend, runs one op, returns its outputs.
struct ParityCase {
  let op: Op
  let name: String
  let tolerance: Tolerance
  let run: (Backend) throws -> [[Float]]
}

/// A named pair of limits for `Compare.check`.
struct Tolerance {
  let nmse: Double
  let maxAbs: Double
  /// Same formula, element by element: only FMA contraction and last-ulp differences of
  /// exp/sin/cos between compilers remain (~1e-7 relative).
  static let elementwise = Tolerance(nmse: 1e-11, maxAbs: 1e-5)
  /// Reductions over a row in another order: f32 rounding of sums of ≤ 5000 terms.
  static let reduction = Tolerance(nmse: 1e-10, maxAbs: 1e-4)
  /// Matrix products with k ≤ 200 summed in tiles vs OpenBLAS's order.
  static let matmul = Tolerance(nmse: 1e-10, maxAbs: 1e-4)
  /// sin/cos of angles up to ~100 rad: GPU range reduction differs from glibc's by ~1e-6.
  static let rope = Tolerance(nmse: 1e-10, maxAbs: 2e-5)
  /// A scalar sum of ~1e5 squares (≈ 3.3e4): f32 tree sums carry ~1e-7 relative error, the
  /// CPU sums in Double, so ~3e-3 absolute.
  static let scalarSum = Tolerance(nmse: 1e-10, maxAbs: 1e-2)
  /// The DPO-family loss: the kernel's f32 logσ/σ against the CPU's Double (~1e-7 relative),
  /// and metric sums of ~40 log-probs of magnitude ≤ 60 (|Σ| ≤ 2400, f32 ulp 2.4e-4).
  static let preference = Tolerance(nmse: 1e-10, maxAbs: 1e-3)
  /// Exact data movement and casts (round to nearest even on both sides).
  static let exact = Tolerance(nmse: 0, maxAbs: 0)
}

/// Seeded inputs uploaded to a backend.
extension Backend {
  func random(_ shape: [Int], seed: UInt64, _ lo: Float = -1, _ hi: Float = 1) throws -> Tensor {
    try tensor(TestData.uniform(shape.reduce(1, *), seed: seed, lo, hi), shape: shape)
  }
  func ints(_ values: [Int32]) throws -> Tensor { try tensor(values, shape: [values.count]) }
  func zeros(_ shape: [Int], _ dtype: DType = .f32) throws -> Tensor {
    let t = try allocate(shape, dtype); try fill(t, value: 0); return t
  }
}

/// Every op's cases. Shapes stay small: lavapipe runs ~40× slower than OpenBLAS.
enum ParityTable {
  static var all: [ParityCase] { memory + linear + blocks + elementwise + optimizer + preference + experts + generation }

  /// `preferenceLoss` for each kind (reward: the values as scores, the references as
  /// margins; orpo: averages from −60 to about −0.05, both sides of log1mexp's −ln 2 branch),
  /// with label smoothing and RPO, 37 pairs of 13 tokens;
  /// called twice so the sums accumulate. Log-probs like real answers' (−60…−2), the
  /// references within ±8 of them, so every branch of σ and the hinge is taken.
  static var preference: [ParityCase] {
    let cases: [(PreferenceLossKind, Double, Double)] = [
      (.sigmoid, 0, 0), (.sigmoid, 0.1, 0.5), (.hinge, 0, 0), (.ipo, 0, 0), (.robust, 0.2, 0), (.ipo, 0, 1),
      (.reward, 0, 0), (.orpo, 0, 0),
    ]
    return cases.enumerated().map { i, c in
      ParityCase(op: .preferenceLoss, name: "\(c.0) ε \(c.1) rpo \(c.2), 37 pairs × 13", tolerance: .preference) { b in
        let rows = 74, tokens = 13
        let policy = TestData.uniform(rows, seed: 90 + UInt64(i), -60, -2)
        let offsets = TestData.uniform(rows, seed: 110 + UInt64(i), -8, 8)
        let lengths = TestData.uniform(rows, seed: 130 + UInt64(i), 1, 40).map { $0.rounded() }
        let p = try b.tensor(policy, shape: [rows])
        let r = try b.tensor(zip(policy, offsets).map { $0 + $1 }, shape: [rows])
        let len = try b.tensor(lengths, shape: [rows])
        let d = try b.tensor([Float(50)], shape: [1])
        let w = try b.allocate([rows, tokens]), loss = try b.tensor([Float(0.25)], shape: [1])
        let m = try b.zeros([PreferenceLossParameters.metricCount])
        let params = PreferenceLossParameters(kind: c.0, beta: i == 3 ? 0.5 : 0.1, labelSmoothing: c.1, rpoAlpha: c.2)
        for _ in 0..<2 {
          try b.preferenceLoss(policy: p, reference: r, answerTokens: len, pairsInStep: d, parameters: params,
                               tokenWeights: w, lossSum: loss, metrics: m)
        }
        return [try b.floats(w), try b.floats(loss), try b.floats(m)]
      }
    }
  }

  static var memory: [ParityCase] { [
    ParityCase(op: .fill, name: "f32 1000", tolerance: .exact) { b in
      let t = try b.allocate([1000]); try b.fill(t, value: -2.5); return [try b.floats(t)]
    },
    ParityCase(op: .copy, name: "view at offset 3", tolerance: .exact) { b in
      let src = try b.random([257], seed: 1), dst = try b.zeros([300])
      try b.copy(src, to: try dst.view(offset: 3, shape: [257])); return [try b.floats(dst)]
    },
    ParityCase(op: .cast, name: "f32→f16→f32", tolerance: .exact) { b in
      let src = try b.random([131], seed: 2, -70000, 70000), h = try b.allocate([131], .f16)
      let back = try b.allocate([131]); try b.cast(src, to: h); try b.cast(h, to: back)
      return [try b.floats(back)]
    },
    ParityCase(op: .permute, name: "attention (2, 5, 3, 4) → (2, 3, 5, 4)", tolerance: .exact) { b in
      let x = try b.random([2, 5, 3, 4], seed: 4), out = try b.allocate([2, 3, 5, 4])
      try b.permute(x, dims: [0, 2, 1, 3], into: out); return [try b.floats(out)]
    },
    ParityCase(op: .permute, name: "3-D (3, 7, 5) by [2, 0, 1]", tolerance: .exact) { b in
      let x = try b.random([3, 7, 5], seed: 5), out = try b.allocate([5, 3, 7])
      try b.permute(x, dims: [2, 0, 1], into: out); return [try b.floats(out)]
    },
    ParityCase(op: .permute, name: "2-D transpose (67, 45)", tolerance: .exact) { b in
      let x = try b.random([67, 45], seed: 6), out = try b.allocate([45, 67])
      try b.permute(x, dims: [1, 0], into: out); return [try b.floats(out)]
    },
    ParityCase(op: .cast, name: "f32→bf16", tolerance: .exact) { b in
      let src = try b.random([130], seed: 3, -3, 3), h = try b.allocate([130], .bf16)
      try b.cast(src, to: h); return [try b.floats(h)]
    },
  ] }

  static var linear: [ParityCase] {
    var cases: [ParityCase] = []
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
      cases.append(ParityCase(op: .matmul, name: "67×45×131 tA=\(ta) tB=\(tb)", tolerance: .matmul) { b in
        let (m, n, k) = (67, 45, 131)
        let a = try b.random(ta ? [k, m] : [m, k], seed: 10), w = try b.random(tb ? [n, k] : [k, n], seed: 11)
        let c = try b.random([m, n], seed: 12)
        try b.matmul(a, w, into: c, transposeA: ta, transposeB: tb, alpha: 0.5, beta: 0.25)
        return [try b.floats(c)]
      })
    }
    cases.append(ParityCase(op: .matmul, name: "batched 3×(17×9×33), B broadcast", tolerance: .matmul) { b in
      let a = try b.random([3, 17, 33], seed: 13), w = try b.random([9, 33], seed: 14)
      let c = try b.allocate([3, 17, 9])
      try b.matmul(a, w, into: c, transposeA: false, transposeB: true, alpha: 1, beta: 0)
      return [try b.floats(c)]
    })
    // Block size 6 gives 256 blocks: one whole nested block of double-quantised scales.
    for dq in [false, true] {
      let tag = dq ? ", double quant" : ""
      cases.append(ParityCase(op: .dequantizeNF4, name: "24×64\(tag)", tolerance: .exact) { b in
        let w = try NF4Weight.quantizing(TestData.uniform(24 * 64, seed: 15), rows: 24, cols: 64, on: b,
                                         blockSize: dq ? 6 : 64, doubleQuant: dq)
        let out = try b.allocate([24, 64]); try b.dequantizeNF4(w, into: out); return [try b.floats(out)]
      })
      for tb in [true, false] {
        cases.append(ParityCase(op: .matmulNF4, name: "x·W\(tb ? "ᵀ" : "") 37×(48×64)\(tag)", tolerance: .matmul) { b in
          let w = try NF4Weight.quantizing(TestData.uniform(48 * 64, seed: 16), rows: 48, cols: 64, on: b,
                                           doubleQuant: dq)
          let x = try b.random([37, tb ? 64 : 48], seed: 17), y = try b.random([37, tb ? 48 : 64], seed: 18)
          try b.matmulNF4(x, w, into: y, transposeB: tb, alpha: 1, beta: 1)
          return [try b.floats(y)]
        })
      }
    }
    // int8 per tensor, per channel and per group of 16, symmetric and with zero points.
    for (block, zp) in [(48 * 64, false), (64, true), (16, false), (16, true)] {
      let tag = "block \(block)\(zp ? ", zero points" : "")"
      cases.append(ParityCase(op: .dequantizeInt8, name: "24×64 \(tag)", tolerance: .exact) { b in
        let w = try TestData.int8Weight(rows: 24, cols: 64, blockSize: min(block, 24 * 64), zeroPoints: zp, seed: 24, on: b)
        let out = try b.allocate([24, 64]); try b.dequantizeInt8(w, into: out); return [try b.floats(out)]
      })
      for tb in [true, false] {
        cases.append(ParityCase(op: .matmulInt8, name: "x·W\(tb ? "ᵀ" : "") 37×(48×64) \(tag)", tolerance: .matmul) { b in
          let w = try TestData.int8Weight(rows: 48, cols: 64, blockSize: block, zeroPoints: zp, seed: 25, on: b)
          let x = try b.random([37, tb ? 64 : 48], seed: 26), y = try b.random([37, tb ? 48 : 64], seed: 27)
          try b.matmulInt8(x, w, into: y, transposeB: tb, alpha: 0.5, beta: 1)
          return [try b.floats(y)]
        })
      }
    }
    for kind in FakeQuant.allCases {
      cases.append(ParityCase(op: .fakeQuantize, name: "\(kind) 24×96, a zero row and a tie", tolerance: .exact) { b in
        var v = TestData.uniform(24 * 96, seed: 31, -2, 2)
        for j in 0..<96 { v[96 + j] = 0 }
        v[200] = 1.5; v[201] = -1.5  // equal magnitudes: the first one sets Q4_0's sign
        let w = try b.tensor(v, shape: [24, 96]), out = try b.allocate([24, 96])
        try b.fakeQuantize(w, kind: kind, into: out)
        return [try b.floats(out)]
      })
    }
    cases.append(ParityCase(op: .matmulInt8, name: "bf16 x·Wᵀ 37×(48×64) block 64", tolerance: .matmul) { b in
      let w = try TestData.int8Weight(rows: 48, cols: 64, blockSize: 64, zeroPoints: true, seed: 28, on: b)
      let x32 = try b.random([37, 64], seed: 29), x = try b.allocate([37, 64], .bf16), y = try b.allocate([37, 48])
      try b.cast(x32, to: x)
      try b.matmulInt8(x, w, into: y, transposeB: true, alpha: 1, beta: 0)
      return [try b.floats(y)]
    })
    cases.append(ParityCase(op: .loraForward, name: "int8 base with zero points, r 8", tolerance: .matmul) { b in
      let (m, inF, outF, r) = (29, 64, 40, 8)
      let base = LinearWeight.int8(try TestData.int8Weight(rows: outF, cols: inF, blockSize: 32, zeroPoints: true, seed: 30, on: b))
      let x = try b.random([m, inF], seed: 20), xd = try b.random([m, inF], seed: 21)
      let a = try b.random([r, inF], seed: 22), bm = try b.random([outF, r], seed: 23)
      let y = try b.allocate([m, outF]), xa = try b.allocate([m, r])
      try b.loraForward(x, loraX: xd, base: base, a: a, b: bm, scale: 2, into: y, xa: xa)
      return [try b.floats(y), try b.floats(xa)]
    })
    for (nf4, dq) in [(false, false), (true, false), (true, true)] {
      let name = "\(nf4 ? "NF4" : "dense")\(dq ? " double-quantised" : "") base, r 8"
      cases.append(ParityCase(op: .loraForward, name: name, tolerance: .matmul) { b in
        let (m, inF, outF, r) = (29, 64, 40, 8)
        let wv = TestData.uniform(outF * inF, seed: 19)
        let base: LinearWeight = nf4
          ? .nf4(try NF4Weight.quantizing(wv, rows: outF, cols: inF, on: b, doubleQuant: dq))
          : .dense(try b.tensor(wv, shape: [outF, inF]))
        let x = try b.random([m, inF], seed: 20), xd = try b.random([m, inF], seed: 21)
        let a = try b.random([r, inF], seed: 22), bm = try b.random([outF, r], seed: 23)
        let y = try b.allocate([m, outF]), xa = try b.allocate([m, r])
        try b.loraForward(x, loraX: xd, base: base, a: a, b: bm, scale: 2, into: y, xa: xa)
        return [try b.floats(y), try b.floats(xa)]
      })
    }
    return cases
  }

  static var blocks: [ParityCase] { [
    ParityCase(op: .rmsNorm, name: "67 rows × 257", tolerance: .reduction) { b in
      let x = try b.random([67, 257], seed: 30, -3, 3), w = try b.random([257], seed: 31)
      let out = try b.allocate([67, 257]), rstd = try b.allocate([67])
      try b.rmsNorm(x, weight: w, eps: 1e-5, into: out, rstd: rstd)
      return [try b.floats(out), try b.floats(rstd)]
    },
    ParityCase(op: .rmsNormBackward, name: "67 rows × 257, dWeight accumulates", tolerance: .reduction) { b in
      let x = try b.random([67, 257], seed: 32, -3, 3), w = try b.random([257], seed: 33)
      let out = try b.allocate([67, 257]), rstd = try b.allocate([67])
      try b.rmsNorm(x, weight: w, eps: 1e-5, into: out, rstd: rstd)
      let dOut = try b.random([67, 257], seed: 34), dx = try b.allocate([67, 257])
      let dw = try b.random([257], seed: 35)
      try b.rmsNormBackward(dOut, x: x, weight: w, rstd: rstd, dx: dx, dWeight: dw)
      return [try b.floats(dx), try b.floats(dw)]
    },
    ParityCase(op: .activation, name: "exact GELU and sigmoid, 1000 values in ±6 (sigmoid ±40)", tolerance: .reduction) { b in
      let x = try b.random([1000], seed: 70, -6, 6), out = try b.allocate([1000])
      try b.activation(.gelu, x, into: out)
      let wide = try b.random([1000], seed: 73, -40, 40), sigmoid = try b.allocate([1000])
      try b.activation(.sigmoid, wide, into: sigmoid)
      return [try b.floats(out), try b.floats(sigmoid)]
    },
    ParityCase(op: .activationBackward, name: "exact and tanh GELU and sigmoid derivatives", tolerance: .reduction) { b in
      let x = try b.random([1000], seed: 71, -6, 6), dOut = try b.random([1000], seed: 72)
      let dx = try b.allocate([1000]), dxTanh = try b.allocate([1000]), dxSigmoid = try b.allocate([1000])
      try b.activationBackward(.gelu, dOut, x: x, into: dx)
      try b.activationBackward(.geluTanh, dOut, x: x, into: dxTanh)
      try b.activationBackward(.sigmoid, dOut, x: x, into: dxSigmoid)
      return [try b.floats(dx), try b.floats(dxTanh), try b.floats(dxSigmoid)]
    },
    ParityCase(op: .layerNorm, name: "67 rows × 257", tolerance: .reduction) { b in
      let x = try b.random([67, 257], seed: 60, -3, 3), w = try b.random([257], seed: 61), bias = try b.random([257], seed: 62)
      let out = try b.allocate([67, 257]), mean = try b.allocate([67]), rstd = try b.allocate([67])
      try b.layerNorm(x, weight: w, bias: bias, eps: 1e-12, into: out, mean: mean, rstd: rstd)
      return [try b.floats(out), try b.floats(mean), try b.floats(rstd)]
    },
    ParityCase(op: .layerNormBackward, name: "67 rows × 257, dWeight and dBias accumulate", tolerance: .reduction) { b in
      let x = try b.random([67, 257], seed: 63, -3, 3), w = try b.random([257], seed: 64), bias = try b.random([257], seed: 65)
      let out = try b.allocate([67, 257]), mean = try b.allocate([67]), rstd = try b.allocate([67])
      try b.layerNorm(x, weight: w, bias: bias, eps: 1e-12, into: out, mean: mean, rstd: rstd)
      let dOut = try b.random([67, 257], seed: 66), dx = try b.allocate([67, 257])
      let dw = try b.random([257], seed: 67), db = try b.random([257], seed: 68)
      try b.layerNormBackward(dOut, x: x, weight: w, mean: mean, rstd: rstd, dx: dx, dWeight: dw, dBias: db)
      return [try b.floats(dx), try b.floats(dw), try b.floats(db)]
    },
    ParityCase(op: .rope, name: "5 tokens × 3 heads × 16", tolerance: .rope) { b in
      let x = try b.random([5, 3, 16], seed: 36), out = try b.allocate([5, 3, 16])
      let inv = try b.tensor(RoPE.inverseFrequencies(headDim: 16, theta: 10000), shape: [8])
      try b.rope(x, positions: try b.ints([0, 1, 7, 50, 99]), invFreq: inv, into: out)
      return [try b.floats(out)]
    },
    ParityCase(op: .ropeBackward, name: "5 tokens × 3 heads × 16", tolerance: .rope) { b in
      let d = try b.random([5, 3, 16], seed: 37), dx = try b.allocate([5, 3, 16])
      let inv = try b.tensor(RoPE.inverseFrequencies(headDim: 16, theta: 10000), shape: [8])
      try b.ropeBackward(d, positions: try b.ints([3, 1, 4, 1, 5]), invFreq: inv, into: dx)
      return [try b.floats(dx)]
    },
    ParityCase(op: .causalSoftmax, name: "2×(7×11) KV-cache offset", tolerance: .reduction) { b in
      let x = try b.random([2, 7, 11], seed: 38, -5, 5), out = try b.allocate([2, 7, 11])
      try b.causalSoftmax(x, scale: 0.125, into: out); return [try b.floats(out)]
    },
    ParityCase(op: .causalSoftmaxBackward, name: "3×(67×67)", tolerance: .reduction) { b in
      let x = try b.random([3, 67, 67], seed: 39, -5, 5), y = try b.allocate([3, 67, 67])
      try b.causalSoftmax(x, scale: 0.3, into: y)
      let dy = try b.random([3, 67, 67], seed: 40), dx = try b.allocate([3, 67, 67])
      try b.causalSoftmaxBackward(dy, out: y, scale: 0.3, into: dx); return [try b.floats(dx)]
    },
    ParityCase(op: .attention, name: "2×(4 heads over 2 kv)×37×8", tolerance: .matmul) { b in
      let q = try b.random([2, 4, 37, 8], seed: 90, -2, 2), k = try b.random([2, 2, 37, 8], seed: 91, -2, 2)
      let v = try b.random([2, 2, 37, 8], seed: 92), out = try b.allocate([2, 4, 37, 8]), lse = try b.allocate([2, 4, 37])
      try b.attention(q: q, k: k, v: v, scale: 0.35, into: out, lse: lse); return [try b.floats(out), try b.floats(lse)]
    },
    ParityCase(op: .attentionBackward, name: "1×(3 heads over 1 kv)×21×16", tolerance: .matmul) { b in
      let q = try b.random([1, 3, 21, 16], seed: 93, -2, 2), k = try b.random([1, 1, 21, 16], seed: 94, -2, 2)
      let v = try b.random([1, 1, 21, 16], seed: 95), out = try b.allocate([1, 3, 21, 16]), lse = try b.allocate([1, 3, 21])
      try b.attention(q: q, k: k, v: v, scale: 0.25, into: out, lse: lse)
      let d = try b.random([1, 3, 21, 16], seed: 96), delta = try b.allocate([1, 3, 21])
      let dq = try b.allocate([1, 3, 21, 16]), dk = try b.allocate([1, 1, 21, 16]), dv = try b.allocate([1, 1, 21, 16])
      try b.attentionBackward(d, q: q, k: k, v: v, out: out, lse: lse, scale: 0.25, delta: delta, dq: dq, dk: dk, dv: dv)
      return try [delta, dq, dk, dv].map { try b.floats($0) }
    },
    ParityCase(op: .swiglu, name: "1000", tolerance: .elementwise) { b in
      let g = try b.random([1000], seed: 41, -6, 6), u = try b.random([1000], seed: 42)
      let out = try b.allocate([1000]); try b.swiglu(gate: g, up: u, into: out); return [try b.floats(out)]
    },
    ParityCase(op: .swigluBackward, name: "1000", tolerance: .elementwise) { b in
      let g = try b.random([1000], seed: 43, -6, 6), u = try b.random([1000], seed: 44)
      let d = try b.random([1000], seed: 45), dg = try b.allocate([1000]), du = try b.allocate([1000])
      try b.swigluBackward(d, gate: g, up: u, dGate: dg, dUp: du); return [try b.floats(dg), try b.floats(du)]
    },
    ParityCase(op: .embedding, name: "9 ids of 50×24", tolerance: .exact) { b in
      let table = try b.random([50, 24], seed: 46), out = try b.allocate([9, 24])
      try b.embedding(ids: try b.ints([0, 49, 3, 3, 7, 0, 12, 49, 1]), table: table, into: out)
      return [try b.floats(out)]
    },
    ParityCase(op: .embeddingBackward, name: "repeated ids accumulate", tolerance: .reduction) { b in
      let dTable = try b.random([50, 24], seed: 47), d = try b.random([9, 24], seed: 48)
      try b.embeddingBackward(ids: try b.ints([0, 49, 3, 3, 7, 0, 12, 49, 3]), dOut: d, dTable: dTable)
      return [try b.floats(dTable)]
    },
    ParityCase(op: .crossEntropy, name: "13×5000 with ignored rows", tolerance: .reduction) { b in
      let logits = try b.random([13, 5000], seed: 49, -8, 8)
      var targets = TestData.ints(13, seed: 50, upper: 5000); targets[2] = -100; targets[9] = -100
      let losses = try b.allocate([13]), d = try b.allocate([13, 5000])
      try b.crossEntropy(logits: logits, targets: try b.ints(targets), ignoreIndex: -100, normalizer: nil,
                         losses: losses, dLogits: d)
      return [try b.floats(losses), try b.floats(d)]
    },
  ] }

  static var elementwise: [ParityCase] { [
    ParityCase(op: .add, name: "bias broadcast, α = −0.5", tolerance: .elementwise) { b in
      let a = try b.random([7, 33], seed: 60), bias = try b.random([33], seed: 61), out = try b.allocate([7, 33])
      try b.add(a, bias, alpha: -0.5, into: out); return [try b.floats(out)]
    },
    ParityCase(op: .mul, name: "same shape", tolerance: .elementwise) { b in
      let a = try b.random([1001], seed: 62), c = try b.random([1001], seed: 63), out = try b.allocate([1001])
      try b.mul(a, c, into: out); return [try b.floats(out)]
    },
    ParityCase(op: .scale, name: "in place", tolerance: .elementwise) { b in
      let a = try b.random([999], seed: 64); try b.scale(a, by: 3.5, into: a); return [try b.floats(a)]
    },
    ParityCase(op: .scaleRows, name: "in place, 3×13 rows of 257 (rank 3)", tolerance: .elementwise) { b in
      let x = try b.random([3, 13, 257], seed: 67), w = try b.random([39], seed: 68, -2, 2)
      try b.scaleRows(x, weights: w, into: x); return [try b.floats(x)]
    },
    ParityCase(op: .scaleRows, name: "out of place, 1 row", tolerance: .elementwise) { b in
      let x = try b.random([1, 1001], seed: 80), w = try b.random([1], seed: 81), out = try b.allocate([1, 1001])
      try b.scaleRows(x, weights: w, into: out); return [try b.floats(out)]
    },
    ParityCase(op: .sumOfSquares, name: "accumulates over two tensors", tolerance: .scalarSum) { b in
      let out = try b.tensor([Float(1.5)], shape: [1])
      try b.sumOfSquares(try b.random([100_003], seed: 65), into: out)
      try b.sumOfSquares(try b.random([17], seed: 66), into: out)
      return [try b.floats(out)]
    },
    ParityCase(op: .dropoutMask, name: "p 0.1, 70 001 elements, two streams", tolerance: .exact) { b in
      let seed = try b.tensor(DropoutMask.seedWords(0x1234_5678_9ABC_DEF0), shape: [2])
      let m0 = try b.allocate([70_001]), m1 = try b.allocate([7, 11])
      try b.dropoutMask(seed: seed, stream: 0, p: 0.1, into: m0)
      try b.dropoutMask(seed: seed, stream: 5, p: 0.5, into: m1)
      return [try b.floats(m0), try b.floats(m1)]
    },
  ] }

  static var optimizer: [ParityCase] { [
    ParityCase(op: .adamW, name: "3 steps, clipped", tolerance: .elementwise) { b in
      let p = try b.random([1000], seed: 70), m = try b.zeros([1000]), v = try b.zeros([1000])
      let hyper = try b.allocate([AdamWHyperParameters.count])
      let sumSq = try b.allocate([1])
      for step in 1...3 {
        let g = try b.random([1000], seed: 70 + UInt64(step))
        try b.fill(sumSq, value: 0)
        try b.sumOfSquares(g, into: sumSq)
        let h = AdamWHyperParameters(lr: 1e-2, weightDecay: 0.1, step: step, gradScale: 0.5, maxGradNorm: 1)
        try b.upload(h.packed, to: hyper)
        try b.adamW(param: p, grad: g, m: m, v: v, hyper: hyper, gradSumOfSquares: sumSq)
      }
      return [try b.floats(p), try b.floats(m), try b.floats(v)]
    },
  ] }
}
