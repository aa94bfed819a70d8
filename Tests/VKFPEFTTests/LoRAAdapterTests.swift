import XCTest
import VKFCore
import VKFModel
import VKFTestSupport
@testable import VKFPEFT

/// One LoRA projection outside the model: forward and backward against the composed formula
/// in Double, and against central finite differences.
final class LoRAAdapterTests: XCTestCase {
  /// f32 backend vs Double host math over sums of ≤ 24 terms of O(1) values: a few ulps;
  /// A wrong transpose, scale or mask is NMSE > 1e-2.
  static let composedNMSE = 1e-10
  static let composedMaxAbs = 1e-5
  /// L = Σ dy⊙y is linear in A, in B and in x separately, so central differences have no
  /// truncation error; what remains is f32 rounding of y (~1e-6 over Σ of 60 terms) divided by
  /// 2h = 0.02: ≤ 1e-4. Gradient entries are O(1).
  static let finiteDifferenceAbs = 1e-3
  static let fdStep: Float = 1e-2

  static let (rows, inF, outF, r) = (6, 12, 10, 4)

  func test_loraBackward_matchesComposed_cpu() throws { try checkComposed(on: TestBackends.cpu, dropout: 0) }
  func test_loraBackward_withDropout_matchesComposed_cpu() throws { try checkComposed(on: TestBackends.cpu, dropout: 0.3) }
  func test_loraBackward_matchesComposed_vulkan() throws { try checkComposed(on: try LoRATiny.vulkanOrSkip(), dropout: 0) }
  func test_loraBackward_withDropout_matchesComposed_vulkan() throws {
    try checkComposed(on: try LoRATiny.vulkanOrSkip(), dropout: 0.3)
  }

  /// y = xWᵀ + b + s·(x_d Aᵀ)Bᵀ; dB = s·dyᵀ·xa; dA = (s·dy·B)ᵀ·x_d; dx = dy·W + (s·dy·B·A)⊙mask.
  private func checkComposed(on be: Backend, dropout: Float) throws {
    let (n, inF, outF, r) = (Self.rows, Self.inF, Self.outF, Self.r)
    let s: Float = 1.75
    let p = try LoRATestProjection(on: be, inF: inF, outF: outF, r: r, scaling: s, dropout: dropout)
    let x = TestData.uniform(n * inF, seed: 21), dy = TestData.uniform(n * outF, seed: 22)
    let (y, dx) = try p.forwardBackward(x, dy: dy, rows: n)
    // The mask the adapter drew for step 0 (a pure function of seed, index, step).
    let mask = dropout > 0
      ? try be.floats(try p.workspace.mask(index: 0, step: 0, rows: n, cols: inF, p: dropout))
      : [Float](repeating: 1, count: n * inF)
    if dropout > 0 {
      let dropped = mask.filter { $0 == 0 }.count
      XCTAssertTrue(dropped > 0 && dropped < mask.count, "mask drops \(dropped) of \(mask.count)")
      XCTAssertTrue(mask.allSatisfy { $0 == 0 || $0 == 1 / (1 - dropout) })
    }
    typealias H = LoRAHostMath
    let W = H.d(try p.values(try XCTUnwrap(p.linear.denseWeight))), bias = H.d(try p.values(try XCTUnwrap(p.linear.bias)))
    let A = H.d(try p.values(p.adapter.a)), B = H.d(try p.values(p.adapter.b))
    let xd = zip(x, mask).map { Double($0) * Double($1) }, dyd = H.d(dy)
    let xa = H.matmul(xd, A, m: n, k: inF, n: r, bT: true)
    let lora = H.matmul(xa, B, m: n, k: r, n: outF, bT: true)
    let base = H.matmul(H.d(x), W, m: n, k: inF, n: outF, bT: true)
    let yE = (0..<(n * outF)).map { base[$0] + bias[$0 % outF] + Double(s) * lora[$0] }
    let dB = H.matmul(H.transpose(dyd, m: n, n: outF), xa, m: outF, k: n, n: r).map { $0 * Double(s) }
    let dxa = H.matmul(dyd, B, m: n, k: outF, n: r).map { $0 * Double(s) }
    let dA = H.matmul(H.transpose(dxa, m: n, n: r), xd, m: r, k: n, n: inF)
    let dxBase = H.matmul(dyd, W, m: n, k: outF, n: inF)
    let dxLoRA = H.matmul(dxa, A, m: n, k: r, n: inF)
    let dxE = (0..<(n * inF)).map { dxBase[$0] + dxLoRA[$0] * Double(mask[$0]) }
    for (what, e, a) in [("y", yE, y), ("dx", dxE, dx), ("dA", dA, try p.values(p.adapter.aGrad)),
                         ("dB", dB, try p.values(p.adapter.bGrad))] {
      if let why = Compare.check(H.f(e), a, nmse: Self.composedNMSE, maxAbs: Self.composedMaxAbs) {
        XCTFail("\(what) (dropout \(dropout)) on \(be.name): \(why)")
      }
    }
  }

  func test_loraGradients_matchFiniteDifferences_cpu() throws {
    let be = TestBackends.cpu
    let (n, inF, outF, r) = (Self.rows, Self.inF, Self.outF, Self.r)
    let p = try LoRATestProjection(on: be, inF: inF, outF: outF, r: r, scaling: 2, dropout: 0.25)
    let x = TestData.uniform(n * inF, seed: 31), dy = TestData.uniform(n * outF, seed: 32)
    let (_, dx) = try p.forwardBackward(x, dy: dy, rows: n)
    p.adapter.dropoutStep = 0  // replay the differentiated step's mask in the forwards below
    let dA = try p.values(p.adapter.aGrad), dB = try p.values(p.adapter.bGrad)
    func loss(_ xv: [Float]) throws -> Double {
      zip(try p.forward(xv, rows: n), dy).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    }
    let h = Self.fdStep
    func central(_ t: Tensor, _ i: Int) throws -> Double {
      var v = try be.floats(t)
      let old = v[i]
      v[i] = old + h; try be.upload(v, to: t); let plus = try loss(x)
      v[i] = old - h; try be.upload(v, to: t); let minus = try loss(x)
      v[i] = old; try be.upload(v, to: t)
      return (plus - minus) / Double(2 * h)
    }
    for i in stride(from: 0, to: r * inF, by: 5) {
      XCTAssertEqual(Double(dA[i]), try central(p.adapter.a, i), accuracy: Self.finiteDifferenceAbs, "dA[\(i)]")
    }
    for i in stride(from: 0, to: outF * r, by: 3) {
      XCTAssertEqual(Double(dB[i]), try central(p.adapter.b, i), accuracy: Self.finiteDifferenceAbs, "dB[\(i)]")
    }
    for i in stride(from: 0, to: n * inF, by: 7) {
      var xp = x, xm = x
      xp[i] += h; xm[i] -= h
      let fd = (try loss(xp) - loss(xm)) / Double(2 * h)
      XCTAssertEqual(Double(dx[i]), fd, accuracy: Self.finiteDifferenceAbs, "dx[\(i)]")
    }
    XCTAssertTrue(dA.contains { $0 != 0 } && dB.contains { $0 != 0 })
  }

  /// Disabled: exactly the base projection, and no adapter gradient.
  func test_disabledAdapter_equalsBaseProjection() throws {
    let be = TestBackends.cpu
    let p = try LoRATestProjection(on: be, inF: Self.inF, outF: Self.outF, r: Self.r, scaling: 2, dropout: 0.2)
    p.adapter.enabled = false
    let x = TestData.uniform(Self.rows * Self.inF, seed: 41), dy = TestData.uniform(Self.rows * Self.outF, seed: 42)
    let (y, dx) = try p.forwardBackward(x, dy: dy, rows: Self.rows)
    var plain = p.linear
    plain.adapter = nil
    let xt = try be.tensor(x, shape: [Self.rows, Self.inF]), yt = try be.allocate([Self.rows, Self.outF])
    try plain.forward(be, xt, into: yt)
    let dxt = try be.allocate([Self.rows, Self.inF]), ones = try be.allocate([Self.rows])
    try be.fill(ones, value: 1)
    try plain.backward(be, dy: try be.tensor(dy, shape: [Self.rows, Self.outF]), x: xt, dx: dxt,
                       accumulateInput: false, ones: ones)
    XCTAssertEqual(y, try be.floats(yt))
    XCTAssertEqual(dx, try be.floats(dxt))
    XCTAssertTrue(try p.values(p.adapter.aGrad).allSatisfy { $0 == 0 })
    XCTAssertTrue(try p.values(p.adapter.bGrad).allSatisfy { $0 == 0 })
  }
}
