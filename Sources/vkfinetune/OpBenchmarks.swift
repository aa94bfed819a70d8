import Foundation
import VKFCore
import VKFCPU

/// One benchmarked op: `setup` allocates its operands on a backend and returns the call.
struct OpBenchCase {
  var name: String
  var shape: String
  /// Floating-point operations of one call (compute-bound ops).
  var flops: Double? = nil
  /// Minimum bytes one call reads and writes (memory-bound ops).
  var bytes: Double? = nil
  var setup: (Backend) throws -> () throws -> Void
}

/// The ops of one SmolLM2-135M training step (hidden 576, MLP 1536, 9 heads of 64, vocab
/// 49152) at `tokens` rows, plus square matmuls for comparison with raw BLAS.
enum OpBenchmarks {
  static func cases(tokens t: Int) -> [OpBenchCase] {
    let (c, f, heads, hd, vocab, r) = (576, 1536, 9, 64, 49152, 16)
    let seqs = t / 256, seq = 256
    func rand(_ b: Backend, _ shape: [Int], _ scale: Float = 1) throws -> Tensor {
      var g = SystemRandomNumberGenerator()
      return try b.tensor((0..<shape.reduce(1, *)).map { _ in Float.random(in: -scale...scale, using: &g) }, shape: shape)
    }
    /// A frozen weight stored 16-bit (mixed precision), random in [−1, 1].
    func half(_ b: Backend, _ shape: [Int], _ dtype: DType) throws -> Tensor {
      let f = try rand(b, shape), h = try b.allocate(shape, dtype)
      try b.cast(f, to: h)
      return h
    }
    func gemm(_ m: Int, _ n: Int, _ k: Int) -> Double { 2 * Double(m) * Double(n) * Double(k) }
    var list: [OpBenchCase] = []
    for n in [1024, 2048] {
      list.append(OpBenchCase(name: "matmul", shape: "\(n)³", flops: gemm(n, n, n)) { b in
        let a = try rand(b, [n, n]), w = try rand(b, [n, n]), out = try b.allocate([n, n])
        return { try b.matmul(a, w, into: out) }
      })
    }
    // Both operands f16: cooperative matrices (tensor cores, WMMA, XMX) where the device has
    // them (`devices` says), else the tiled kernel; tools/bench-gpu sets cuBLAS beside it.
    list.append(OpBenchCase(name: "matmul f16·f16", shape: "2048³", flops: gemm(2048, 2048, 2048)) { b in
      let a = try half(b, [2048, 2048], .f16), w = try half(b, [2048, 2048], .f16)
      let out = try b.allocate([2048, 2048])
      return { try b.matmul(a, w, into: out) }
    })
    list += [
      OpBenchCase(name: "matmul x·Wᵀ, x and W f16 (up_proj)", shape: "\(t)×\(c) · (\(f)×\(c))ᵀ", flops: gemm(t, f, c)) { b in
        let x = try half(b, [t, c], .f16), w = try half(b, [f, c], .f16), y = try b.allocate([t, f])
        return { try b.matmul(x, w, into: y, transposeB: true) }
      },
      OpBenchCase(name: "matmul x·Wᵀ (up_proj)", shape: "\(t)×\(c) · (\(f)×\(c))ᵀ", flops: gemm(t, f, c)) { b in
        let x = try rand(b, [t, c]), w = try rand(b, [f, c]), y = try b.allocate([t, f])
        return { try b.matmul(x, w, into: y, transposeB: true) }
      },
      OpBenchCase(name: "matmul x·Wᵀ, W bf16 (up_proj)", shape: "\(t)×\(c) · (\(f)×\(c))ᵀ", flops: gemm(t, f, c)) { b in
        let x = try rand(b, [t, c]), w = try half(b, [f, c], .bf16), y = try b.allocate([t, f])
        return { try b.matmul(x, w, into: y, transposeB: true) }
      },
      OpBenchCase(name: "matmul x·Wᵀ, W f16 (up_proj)", shape: "\(t)×\(c) · (\(f)×\(c))ᵀ", flops: gemm(t, f, c)) { b in
        let x = try rand(b, [t, c]), w = try half(b, [f, c], .f16), y = try b.allocate([t, f])
        return { try b.matmul(x, w, into: y, transposeB: true) }
      },
      OpBenchCase(name: "matmul dY·W, W bf16 (dx)", shape: "\(t)×\(f) · \(f)×\(c)", flops: gemm(t, c, f)) { b in
        let dy = try rand(b, [t, f]), w = try half(b, [f, c], .bf16), dx = try b.allocate([t, c])
        return { try b.matmul(dy, w, into: dx) }
      },
      OpBenchCase(name: "matmul dYᵀ·X (dW)", shape: "(\(t)×\(f))ᵀ · \(t)×\(c)", flops: gemm(f, c, t)) { b in
        let dy = try rand(b, [t, f]), x = try rand(b, [t, c]), dw = try b.allocate([f, c])
        return { try b.matmul(dy, x, into: dw, transposeA: true) }
      },
      OpBenchCase(name: "matmul batched QKᵀ", shape: "\(seqs * heads)×(\(seq)×\(hd))·(\(seq)×\(hd))ᵀ",
                  flops: Double(seqs * heads) * gemm(seq, seq, hd)) { b in
        let q = try rand(b, [seqs * heads, seq, hd]), k = try rand(b, [seqs * heads, seq, hd])
        let s = try b.allocate([seqs * heads, seq, seq])
        return { try b.matmul(q, k, into: s, transposeB: true) }
      },
      OpBenchCase(name: "matmulNF4 x·Wᵀ", shape: "\(t)×\(c) · NF4(\(f)×\(c))ᵀ", flops: gemm(t, f, c)) { b in
        let w = try NF4Weight.quantizing((0..<(f * c)).map { _ in Float.random(in: -1...1) }, rows: f, cols: c, on: b)
        let x = try rand(b, [t, c]), y = try b.allocate([t, f])
        return { try b.matmulNF4(x, w, into: y, transposeB: true, alpha: 1, beta: 0) }
      },
      OpBenchCase(name: "matmulNF4 x·Wᵀ, x bf16", shape: "\(t)×\(c) · NF4(\(f)×\(c))ᵀ", flops: gemm(t, f, c)) { b in
        let w = try NF4Weight.quantizing((0..<(f * c)).map { _ in Float.random(in: -1...1) }, rows: f, cols: c, on: b)
        let x = try half(b, [t, c], .bf16), y = try b.allocate([t, f])
        return { try b.matmulNF4(x, w, into: y, transposeB: true, alpha: 1, beta: 0) }
      },
      OpBenchCase(name: "loraForward r16", shape: "\(t)×\(c) → \(f)", flops: gemm(t, f, c) + gemm(t, r, c) + gemm(t, f, r)) { b in
        let x = try rand(b, [t, c]), w = try rand(b, [f, c]), a = try rand(b, [r, c]), bm = try rand(b, [f, r])
        let y = try b.allocate([t, f]), xa = try b.allocate([t, r])
        return { try b.loraForward(x, loraX: nil, base: .dense(w), a: a, b: bm, scale: 2, into: y, xa: xa) }
      },
      OpBenchCase(name: "rmsNorm", shape: "\(t)×\(c)", bytes: Double(8 * t * c)) { b in
        let x = try rand(b, [t, c]), w = try rand(b, [c]), out = try b.allocate([t, c]), rstd = try b.allocate([t])
        return { try b.rmsNorm(x, weight: w, eps: 1e-5, into: out, rstd: rstd) }
      },
      OpBenchCase(name: "rmsNormBackward", shape: "\(t)×\(c)", bytes: Double(12 * t * c)) { b in
        let x = try rand(b, [t, c]), w = try rand(b, [c]), out = try b.allocate([t, c]), rstd = try b.allocate([t])
        try b.rmsNorm(x, weight: w, eps: 1e-5, into: out, rstd: rstd)
        let dOut = try rand(b, [t, c]), dx = try b.allocate([t, c]), dw = try b.allocate([c])
        return { try b.rmsNormBackward(dOut, x: x, weight: w, rstd: rstd, dx: dx, dWeight: dw) }
      },
      OpBenchCase(name: "rope", shape: "\(t)×\(heads)×\(hd)", bytes: Double(8 * t * heads * hd)) { b in
        let x = try rand(b, [t, heads, hd]), out = try b.allocate([t, heads, hd])
        let pos = try b.tensor((0..<t).map { Int32($0 % seq) }, shape: [t])
        let inv = try b.tensor(RoPE.inverseFrequencies(headDim: hd, theta: 100000), shape: [hd / 2])
        return { try b.rope(x, positions: pos, invFreq: inv, into: out) }
      },
      OpBenchCase(name: "causalSoftmax", shape: "\(seqs * heads)×\(seq)×\(seq)", bytes: Double(8 * seqs * heads * seq * seq)) { b in
        let x = try rand(b, [seqs * heads, seq, seq]), out = try b.allocate([seqs * heads, seq, seq])
        return { try b.causalSoftmax(x, scale: 0.125, into: out) }
      },
      OpBenchCase(name: "swiglu", shape: "\(t)×\(f)", bytes: Double(12 * t * f)) { b in
        let g = try rand(b, [t, f]), u = try rand(b, [t, f]), out = try b.allocate([t, f])
        return { try b.swiglu(gate: g, up: u, into: out) }
      },
      OpBenchCase(name: "embedding", shape: "\(t) of \(vocab)×\(c)", bytes: Double(8 * t * c)) { b in
        let table = try rand(b, [vocab, c]), out = try b.allocate([t, c])
        let ids = try b.tensor((0..<t).map { Int32(($0 * 7919) % vocab) }, shape: [t])
        return { try b.embedding(ids: ids, table: table, into: out) }
      },
      OpBenchCase(name: "embedding, table bf16", shape: "\(t) of \(vocab)×\(c)", bytes: Double(6 * t * c)) { b in
        let table = try half(b, [vocab, c], .bf16), out = try b.allocate([t, c])
        let ids = try b.tensor((0..<t).map { Int32(($0 * 7919) % vocab) }, shape: [t])
        return { try b.embedding(ids: ids, table: table, into: out) }
      },
      OpBenchCase(name: "crossEntropy + grad", shape: "\(t)×\(vocab)", bytes: Double(8 * t * vocab)) { b in
        let logits = try rand(b, [t, vocab], 4), d = try b.allocate([t, vocab]), losses = try b.allocate([t])
        let targets = try b.tensor((0..<t).map { Int32(($0 * 31) % vocab) }, shape: [t])
        return { try b.crossEntropy(logits: logits, targets: targets, ignoreIndex: -100, normalizer: nil,
                                    losses: losses, dLogits: d) }
      },
      OpBenchCase(name: "adamW", shape: "10M params", bytes: 28e7) { b in
        let n = 10_000_000
        let p = try rand(b, [n]), g = try rand(b, [n]), m = try b.allocate([n]), v = try b.allocate([n])
        try b.fill(m, value: 0); try b.fill(v, value: 0)
        let hyper = try b.tensor(AdamWHyperParameters(lr: 1e-4).packed, shape: [AdamWHyperParameters.count])
        return { try b.adamW(param: p, grad: g, m: m, v: v, hyper: hyper, gradSumOfSquares: nil) }
      },
      OpBenchCase(name: "sumOfSquares", shape: "10M", bytes: 4e7) { b in
        let x = try rand(b, [10_000_000]), out = try b.allocate([1])
        try b.fill(out, value: 0)
        return { try b.sumOfSquares(x, into: out) }
      },
    ]
    return list
  }

  /// Runs once to warm up (shader compiles, page faults), then repeats for `seconds`.
  static func measure(_ c: OpBenchCase, on backend: Backend, seconds: Double) throws -> BenchResult {
    let call = try c.setup(backend)
    try backend.synchronize()
    try call(); try backend.synchronize()
    let t0 = Date()
    try call(); try backend.synchronize()
    let once = max(Date().timeIntervalSince(t0), 1e-6)
    let runs = max(1, min(1000, Int(seconds / once)))
    let t1 = Date()
    for _ in 0..<runs { try call() }
    try backend.synchronize()
    let per = Date().timeIntervalSince(t1) / Double(runs)
    return BenchResult(op: c.name, shape: c.shape, secondsPerRun: per,
                       gflops: c.flops.map { $0 / per / 1e9 }, gbps: c.bytes.map { $0 / per / 1e9 })
  }

  /// On the CPU backend: raw `cblas_sgemm` at the square sizes, measured in the same run, so
  /// the backend's overhead over BLAS is a ratio of two numbers taken side by side.
  static func referenceRows(backend: Backend, filter: String?, seconds: Double) -> [BenchResult]? {
    guard backend is CPUBackend, filter.map({ "raw cblas_sgemm".contains($0) }) ?? true else { return nil }
    return [1024, 2048].map { n in
      let per = OpenBLASCore.timeRawSgemm(n: n, seconds: seconds)
      return BenchResult(op: "raw cblas_sgemm", shape: "\(n)³", secondsPerRun: per,
                         gflops: 2 * pow(Double(n), 3) / per / 1e9, gbps: nil)
    }
  }
}
