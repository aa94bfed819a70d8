import XCTest
import VKFCore
import VKFModel
import VKFTestSupport
@testable import VKFPEFT

/// DoRA against peft's `DoraLinearLayer` (fixture from tools/make_lora_fixtures.py) and, with
/// dropout (which peft draws from torch's RNG), against peft's formula composed in Double.
final class DoRAAdapterTests: XCTestCase {
  /// vs peft in f32: the same math in another order (the row norm through RMSNorm's rstd,
  /// k ≤ 24). Detaching the norm or not changes dA/dB by NMSE > 1e-3.
  static let peftNMSE = 1e-10
  static let peftMaxAbs = 1e-5
  /// f32 backend vs Double host math, as LoRAAdapterTests.composed*.
  static let composedNMSE = 1e-10
  static let composedMaxAbs = 1e-5
  /// Magnitude init: Double row norms rounded once vs torch's f32 norm: ≤ 1 ulp (2.4e-7
  /// relative at norms ~ 1–3).
  static let magnitudeInitMaxAbs = 1e-6

  func test_doraLinear_matchesPEFT_cpu() throws { try checkPEFT(on: TestBackends.cpu) }
  func test_doraLinear_matchesPEFT_vulkan() throws { try checkPEFT(on: try LoRATiny.vulkanOrSkip()) }

  private func checkPEFT(on be: Backend) throws {
    let f = try LoRATiny.fixture("dora_linear.safetensors")
    let W = try f.floats("W"), A = try f.floats("A"), B = try f.floats("B")
    let (outF, inF) = (try f.shape(of: "W")[0], try f.shape(of: "W")[1]), r = try f.shape(of: "A")[0]
    let n = try f.shape(of: "x")[0]
    let zeros = { (c: Int) throws -> Tensor in let t = try be.allocate([c]); try be.fill(t, value: 0); return t }
    let ws = LoRAWorkspace(backend: be)
    let adapter = try LoRAAdapter(
      a: try be.tensor(A, shape: [r, inF]), b: try be.tensor(B, shape: [outF, r]),
      aGrad: try zeros(r * inF).reshaped([r, inF]), bGrad: try zeros(outF * r).reshaped([outF, r]),
      magnitude: try be.tensor(try f.floats("m"), shape: [outF]), magnitudeGrad: try zeros(outF),
      scaling: try f.floats("scaling")[0], dropout: 0, index: 0, workspace: ws)
    var linear = Linear(weight: try be.tensor(W, shape: [outF, inF]), bias: try be.tensor(try f.floats("b"), shape: [outF]))
    linear.adapter = adapter
    let x = try be.tensor(try f.floats("x"), shape: [n, inF]), y = try be.allocate([n, outF])
    try linear.forward(be, x, into: y)
    let dx = try be.allocate([n, inF]), ones = try be.allocate([n])
    try be.fill(ones, value: 1)
    try linear.backward(be, dy: try be.tensor(try f.floats("dy"), shape: [n, outF]), x: x, dx: dx,
                        accumulateInput: false, ones: ones)
    for (what, key, t) in [("y", "y", y), ("dx", "dx", dx), ("dA", "grad.A", adapter.aGrad),
                           ("dB", "grad.B", adapter.bGrad), ("dm", "grad.m", try XCTUnwrap(adapter.magnitudeGrad))] {
      if let why = Compare.check(try f.floats(key), try be.floats(t), nmse: Self.peftNMSE, maxAbs: Self.peftMaxAbs) {
        XCTFail("DoRA \(what) vs peft on \(be.name): \(why)")
      }
    }
  }

  /// LoRAModel's DoRA magnitude starts at the row norms of W, as peft's (fixture's W has
  /// peft's init_magnitude).
  func test_doraMagnitudeInit_equalsPEFTRowNorms() throws {
    let f = try LoRATiny.fixture("dora_linear.safetensors")
    let (outF, inF) = (try f.shape(of: "W")[0], try f.shape(of: "W")[1])
    let be = TestBackends.cpu
    let linear = Linear(weight: try be.tensor(try f.floats("W"), shape: [outF, inF]))
    let norms = try LoRAModel.rowNorms(of: linear, on: be)
    if let why = Compare.check(try f.floats("init_magnitude"), norms, nmse: 1e-12, maxAbs: Self.magnitudeInitMaxAbs) {
      XCTFail("magnitude init: \(why)")
    }
  }

  func test_doraWithDropout_matchesComposed_cpu() throws { try checkDropout(on: TestBackends.cpu) }
  func test_doraWithDropout_matchesComposed_vulkan() throws { try checkDropout(on: try LoRATiny.vulkanOrSkip()) }

  /// peft's training-mode DoRA with dropout: y = xWᵀ + b + (m̂−1)⊙(x_d Wᵀ) + m̂⊙s·(x_d Aᵀ)Bᵀ,
  /// m̂ = m/‖W + sBA‖ (detached); gradients of that expression with the norm constant.
  private func checkDropout(on be: Backend) throws {
    let (n, inF, outF, r) = (5, 12, 8, 3)
    let s: Float = 1.5, pDrop: Float = 0.4
    let p = try LoRATestProjection(on: be, inF: inF, outF: outF, r: r, scaling: s, dropout: pDrop, dora: true)
    let x = TestData.uniform(n * inF, seed: 51), dy = TestData.uniform(n * outF, seed: 52)
    let (y, dx) = try p.forwardBackward(x, dy: dy, rows: n)
    let mask = try be.floats(try p.workspace.mask(index: 0, step: 0, rows: n, cols: inF, p: pDrop))
    typealias H = LoRAHostMath
    let W = H.d(try p.values(try XCTUnwrap(p.linear.denseWeight))), bias = H.d(try p.values(try XCTUnwrap(p.linear.bias)))
    let A = H.d(try p.values(p.adapter.a)), B = H.d(try p.values(p.adapter.b))
    let m = H.d(try p.values(try XCTUnwrap(p.adapter.magnitude)))
    let BA = H.matmul(B, A, m: outF, k: r, n: inF)
    let norm = (0..<outF).map { j in
      (0..<inF).reduce(0.0) { acc, k in let v = W[j * inF + k] + Double(s) * BA[j * inF + k]; return acc + v * v }.squareRoot()
    }
    let mhat = (0..<outF).map { m[$0] / norm[$0] }
    let xd = zip(x, mask).map { Double($0) * Double($1) }, dyd = H.d(dy)
    let xa = H.matmul(xd, A, m: n, k: inF, n: r, bT: true)
    let lora = H.matmul(xa, B, m: n, k: r, n: outF, bT: true)
    let baseX = H.matmul(H.d(x), W, m: n, k: inF, n: outF, bT: true)
    let baseXd = H.matmul(xd, W, m: n, k: inF, n: outF, bT: true)
    let yE = (0..<(n * outF)).map { i -> Double in
      let j = i % outF
      return baseX[i] + bias[j] + (mhat[j] - 1) * baseXd[i] + mhat[j] * Double(s) * lora[i]
    }
    var dm = [Double](repeating: 0, count: outF)
    for i in 0..<(n * outF) { let j = i % outF; dm[j] += dyd[i] * (baseXd[i] + Double(s) * lora[i]) / norm[j] }
    let g = (0..<(n * outF)).map { dyd[$0] * mhat[$0 % outF] }
    let dB = H.matmul(H.transpose(g, m: n, n: outF), xa, m: outF, k: n, n: r).map { $0 * Double(s) }
    let dxa = H.matmul(g, B, m: n, k: outF, n: r).map { $0 * Double(s) }
    let dA = H.matmul(H.transpose(dxa, m: n, n: r), xd, m: r, k: n, n: inF)
    let gMinusDy = zip(g, dyd).map { $0 - $1 }
    let dxd = zip(H.matmul(gMinusDy, W, m: n, k: outF, n: inF), H.matmul(dxa, A, m: n, k: r, n: inF)).map { $0 + $1 }
    let dxBase = H.matmul(dyd, W, m: n, k: outF, n: inF)
    let dxE = (0..<(n * inF)).map { dxBase[$0] + dxd[$0] * Double(mask[$0]) }
    for (what, e, a) in [("y", yE, y), ("dx", dxE, dx), ("dA", dA, try p.values(p.adapter.aGrad)),
                         ("dB", dB, try p.values(p.adapter.bGrad)),
                         ("dm", dm, try p.values(try XCTUnwrap(p.adapter.magnitudeGrad)))] {
      if let why = Compare.check(H.f(e), a, nmse: Self.composedNMSE, maxAbs: Self.composedMaxAbs) {
        XCTFail("DoRA+dropout \(what) on \(be.name): \(why)")
      }
    }
  }

  /// A fresh DoRA model (B = 0, m = ‖W‖) reproduces the base model's logits up to the
  /// rounding of m/‖W‖ ≈ 1 (a few ulps of each projection's output).
  func test_doraModel_initialLogits_equalBase() throws {
    let be = TestBackends.cpu
    let w = try LoRATiny.weights(on: be)
    let base = try LoRATiny.logits(try DecoderModel(weights: w))
    _ = try LoRAModel(weights: w, config: LoRAConfig(r: 4, alpha: 8, useDoRA: true), seed: 3)
    let dora = try LoRATiny.logits(try DecoderModel(weights: w))
    // m/‖W‖ is 1 within ~3 ulps; through 2 layers the logits (O(1)) move by ≤ ~1e-6.
    if let why = Compare.check(base, dora, nmse: 1e-12, maxAbs: 1e-5) { XCTFail("DoRA init logits: \(why)") }
  }
}
