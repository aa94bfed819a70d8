import Foundation
import VKFCore
import VKFCPU
import VKFVulkan

/// `vkfinetune devices --verify`: the picked device's matmul variants, the NF4 matmul with
/// 16-bit activations and fused attention (with and without a sliding window) against the
/// CPU backend on the same inputs — the shader tests' parity check for machines without
/// Swift's test tools (a lent GPU runs it from tools/bench-gpu). Exits non-zero on a mismatch.
enum DeviceVerify {
  /// f32 sums of k terms in [−1, 1] in another order (the shader tests' bound, ×100 margin).
  static let tiledNMSE = 1e-10
  /// Tensor-core accumulation may truncate partial sums: a biased k·2⁻²³ relative error
  /// (the shader tests' `coopmatNMSE`); a layout bug gives NMSE ≳ 1e-2.
  static let coopmatNMSE = 1e-8

  struct Case {
    var m: Int, n: Int, k: Int
    var a: DType, b: DType
    var transposeA: Bool, transposeB: Bool
    var batch = 1
  }

  /// Odd sizes (partial tiles, rows starting mid-word), every transpose, both 16-bit types,
  /// a batch, and one product large enough to fill a GPU's grid.
  static let cases: [Case] = {
    var list: [Case] = []
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
      list.append(Case(m: 67, n: 45, k: 131, a: .f16, b: .f16, transposeA: ta, transposeB: tb))
    }
    list.append(Case(m: 130, n: 150, k: 96, a: .f16, b: .f16, transposeA: false, transposeB: true, batch: 3))
    list.append(Case(m: 1000, n: 1536, k: 576, a: .f16, b: .f16, transposeA: false, transposeB: true))
    list.append(Case(m: 67, n: 45, k: 131, a: .f32, b: .bf16, transposeA: false, transposeB: true))
    list.append(Case(m: 67, n: 45, k: 131, a: .f32, b: .f32, transposeA: true, transposeB: false))
    return list
  }()

  /// Runs every case on `device` and the CPU; prints one line each. True when all agree.
  static func run(_ device: VulkanBackend) throws -> Bool {
    let cpu = CPUBackend()
    let matmuls = try runMatmuls(device, cpu: cpu)
    let others = try runNF4AndAttention(device, cpu: cpu)
    return matmuls && others
  }

  private static func report(_ name: String, _ kernel: String, _ e: Double, _ limit: Double, finite: Bool) -> Bool {
    let pass = e <= limit && finite
    print("\(pass ? "ok  " : "FAIL") \(name.padding(toLength: 35, withPad: " ", startingAt: 0)) "
      + "\(kernel.padding(toLength: 18, withPad: " ", startingAt: 0)) nmse \(String(format: "%.1e", e)) "
      + "(limit \(String(format: "%.0e", limit)))")
    return pass
  }

  /// matmulNF4 with a bf16 x, and fused attention forward + backward at SmolLM2's head size
  /// with GQA, causal, with a 9-key window and with soft-capped scores (the shader tests' f32
  /// tolerance).
  private static func runNF4AndAttention(_ device: VulkanBackend, cpu: CPUBackend) throws -> Bool {
    var rng = SplitMix64(seed: 0xA77E)
    func values(_ n: Int) -> [Float] { (0..<n).map { _ in Float.random(in: -1...1, using: &rng) } }
    var ok = true
    // NF4: y (67, 130) = x (67, 90) bf16 · Wᵀ, W (130, 90) NF4.
    let (m, rows, cols) = (67, 130, 90)
    let w = values(rows * cols), x = values(m * cols)
    var nf4: [[Float]] = []
    for backend in [device as Backend, cpu] {
      let q = try NF4Weight.quantizing(w, rows: rows, cols: cols, on: backend)
      let xf = try backend.tensor(x, shape: [m, cols]), xh = try backend.allocate([m, cols], .bf16)
      try backend.cast(xf, to: xh)
      let y = try backend.allocate([m, rows])
      try backend.matmulNF4(xh, q, into: y, transposeB: true, alpha: 1, beta: 0)
      nf4.append(try backend.floats(y))
    }
    ok = report("matmulNF4 67×(130,90) x bf16", "tiled, NF4 decode", Metrics.nmse(nf4[1], nf4[0]), tiledNMSE,
                finite: nf4[0].allSatisfy(\.isFinite)) && ok
    // Attention: B 1, NH 4, KVH 2, T 37, HS 64.
    let (nh, kvh, t, hs) = (4, 2, 37, 64)
    let qv = values(nh * t * hs), kv = values(kvh * t * hs), vv = values(kvh * t * hs), dov = values(nh * t * hs)
    // Causal, a 9-key window, and a window with Gemma 2's soft-capped scores (cap 1).
    for (window, softcap) in [(0, Float(0)), (9, 0), (9, 1)] {
      var outs: [[[Float]]] = []
      for backend in [device as Backend, cpu] {
        let q = try backend.tensor(qv, shape: [1, nh, t, hs]), k = try backend.tensor(kv, shape: [1, kvh, t, hs])
        let v = try backend.tensor(vv, shape: [1, kvh, t, hs]), out = try backend.allocate([1, nh, t, hs])
        let lse = try backend.allocate([1, nh, t]), delta = try backend.allocate([1, nh, t])
        let dq = try backend.allocate([1, nh, t, hs]), dk = try backend.allocate([1, kvh, t, hs])
        let dv = try backend.allocate([1, kvh, t, hs])
        try backend.attention(q: q, k: k, v: v, scale: 0.125, window: window, softcap: softcap, into: out, lse: lse)
        try backend.attentionBackward(try backend.tensor(dov, shape: [1, nh, t, hs]), q: q, k: k, v: v, out: out,
                                      lse: lse, scale: 0.125, window: window, softcap: softcap, delta: delta,
                                      dq: dq, dk: dk, dv: dv)
        outs.append(try [out, lse, dq, dk, dv].map { try backend.floats($0) })
      }
      let worst = zip(outs[1], outs[0]).map { Metrics.nmse($0, $1) }.max() ?? .infinity
      ok = report("attention fwd+bwd T37 HS64 window \(window)\(softcap > 0 ? " softcap \(softcap)" : "")", "fused",
                  worst, tiledNMSE,
                  finite: outs[0].allSatisfy { $0.allSatisfy(\.isFinite) }) && ok
    }
    return ok
  }

  /// Every matmul case on `device` and the CPU.
  private static func runMatmuls(_ device: VulkanBackend, cpu: CPUBackend) throws -> Bool {
    var ok = true
    for (i, c) in cases.enumerated() {
      var rng = SplitMix64(seed: 0x5EED + UInt64(i))
      func values(_ n: Int) -> [Float] { (0..<n).map { _ in Float.random(in: -1...1, using: &rng) } }
      let aShape = [c.batch] + (c.transposeA ? [c.k, c.m] : [c.m, c.k])
      let bShape = [c.batch] + (c.transposeB ? [c.n, c.k] : [c.k, c.n])
      let av = values(aShape.reduce(1, *)), bv = values(bShape.reduce(1, *))
      var results: [[Float]] = []
      for backend in [device as Backend, cpu] {
        func operand(_ v: [Float], _ shape: [Int], _ t: DType) throws -> Tensor {
          let f = try backend.tensor(v, shape: shape)
          guard t != .f32 else { return f }
          let h = try backend.allocate(shape, t)
          try backend.cast(f, to: h)
          return h
        }
        let a = try operand(av, aShape, c.a), b = try operand(bv, bShape, c.b)
        let out = try backend.allocate([c.batch, c.m, c.n])
        try backend.matmul(a, b, into: out, transposeA: c.transposeA, transposeB: c.transposeB,
                           alpha: 1, beta: 0)
        results.append(try backend.floats(out))
      }
      let coopmat = device.usesCooperativeMatrix(a: c.a, b: c.b)
      let limit = coopmat ? coopmatNMSE : tiledNMSE
      let kernel = coopmat ? "cooperative matrix" : "tiled"
      let label = "\(c.batch)×\(c.m)×\(c.n)×\(c.k) \(c.a)\(c.transposeA ? "ᵀ" : "")·\(c.b)\(c.transposeB ? "ᵀ" : "")"
      ok = report("matmul " + label, kernel, Metrics.nmse(results[1], results[0]), limit,
                  finite: results[0].allSatisfy(\.isFinite)) && ok
    }
    return ok
  }
}
