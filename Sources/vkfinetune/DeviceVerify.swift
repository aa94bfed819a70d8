import Foundation
import VKFCore
import VKFCPU
import VKFVulkan

/// `vkfinetune devices --verify`: the picked device's matmul variants against the CPU
/// backend on the same inputs — the shader tests' parity check for machines without Swift's
/// test tools (a lent GPU runs it from tools/bench-gpu). Exits non-zero on a mismatch.
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
      let e = Metrics.nmse(results[1], results[0])
      let pass = e <= limit && results[0].allSatisfy(\.isFinite)
      ok = ok && pass
      print("\(pass ? "ok  " : "FAIL") matmul \(label.padding(toLength: 28, withPad: " ", startingAt: 0)) "
        + "\(kernel.padding(toLength: 18, withPad: " ", startingAt: 0)) nmse \(String(format: "%.1e", e)) "
        + "(limit \(String(format: "%.0e", limit)))")
    }
    return ok
  }
}
