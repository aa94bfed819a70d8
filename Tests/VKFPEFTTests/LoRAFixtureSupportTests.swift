import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport
@testable import VKFPEFT

/// Weights held in memory, by Hugging Face name: a synthetic tiny model for LoRA tests.
final class LoRATestWeights: WeightSource {
  var tensors: [String: (shape: [Int], values: [Float])] = [:]
  var tensorNames: [String] { tensors.keys.sorted() }
  func shape(of name: String) throws -> [Int] {
    guard let t = tensors[name] else { throw ModelFileError(name, "no such tensor") }
    return t.shape
  }
  func storedType(of name: String) throws -> String { "F32" }
  func floats(_ name: String) throws -> [Float] {
    guard let t = tensors[name] else { throw ModelFileError(name, "no such tensor") }
    return t.values
  }

  /// Seeded weights for every parameter of `shape`: norms near 1, matrices U(−0.3, 0.3).
  init(shape: TransformerShape, seed: UInt64) {
    for (i, (name, s)) in shape.parameterShapes.enumerated() {
      let n = s.reduce(1, *), sd = seed &+ UInt64(i) &* 7919
      tensors[name] = (s, name.hasSuffix("norm.weight")
        ? TestData.uniform(n, seed: sd, 0.8, 1.2) : TestData.uniform(n, seed: sd, -0.3, 0.3))
    }
  }
}

/// The tiny model every LoRA test uses, and helpers around it.
enum LoRATiny {
  /// 2 layers, GQA (4 query / 2 kv heads), Qwen2-style q/k/v biases, untied head; every
  /// projection's element count is a multiple of 64 (whole NF4 blocks) except where noted.
  static let shape = TransformerShape(hidden: 16, layers: 2, heads: 4, kvHeads: 2, headDim: 4,
                                      intermediate: 24, vocab: 19, rmsNormEps: 1e-6, ropeTheta: 10000,
                                      tiedEmbeddings: false, qkvBias: true)
  static let batch = 2
  static let ids: [Int32] = TestData.ints(10, seed: 11, upper: 19)
  static let targets: [Int32] = {
    var t = TestData.ints(10, seed: 12, upper: 19)
    t[3] = DecoderModel.ignoreIndex
    return t
  }()

  /// Frozen tiny-model weights on `backend`.
  static func weights(on backend: Backend, trainable: TrainableParameters = .none) throws -> DecoderWeights {
    try DecoderWeights(from: LoRATestWeights(shape: shape, seed: 5), shape: shape, backend: backend,
                     trainable: trainable)
  }

  /// Seeded nonzero values for every adapter tensor (B included), by PEFT key.
  static func randomAdapterValues(_ lora: LoRAModel, seed: UInt64, scale: Float = 0.3) -> [String: [Float]] {
    var out: [String: [Float]] = [:]
    for (i, t) in lora.trainableTensors.enumerated() {
      let s = seed &+ UInt64(i) &* 104_729
      out[t.name] = t.name.hasSuffix(LoRAModel.magnitudeKey)
        ? TestData.uniform(t.count, seed: s, 0.5, 1.5) : TestData.uniform(t.count, seed: s, -scale, scale)
    }
    return out
  }

  /// Forward with gradients, backward, and the loss.
  @discardableResult
  static func step(_ model: DecoderModel) throws -> Float {
    try model.forward(ids: ids, targets: targets, batch: batch, computeGradients: true)
    let loss = try model.loss()
    try model.backward()
    return loss
  }

  /// The loss of an inference forward.
  static func loss(_ model: DecoderModel) throws -> Float {
    try model.forward(ids: ids, targets: targets, batch: batch)
    return try model.loss()
  }

  /// Logits of an inference forward.
  static func logits(_ model: DecoderModel) throws -> [Float] {
    try model.forward(ids: ids, batch: batch)
    return try model.backend.floats(try XCTUnwrap(model.logits))
  }

  /// Every adapter gradient by PEFT key.
  static func gradients(_ lora: LoRAModel) throws -> [String: [Float]] {
    var out: [String: [Float]] = [:]
    for t in lora.trainableTensors { out[t.name] = try lora.weights.backend.floats(t.gradient) }
    return out
  }

  /// The Vulkan backend, or a skip (a failure under VKF_REQUIRE_VULKAN=1).
  static func vulkanOrSkip() throws -> Backend {
    if let vk = TestBackends.vulkan { return vk }
    if ProcessInfo.processInfo.environment["VKF_REQUIRE_VULKAN"] == "1" {
      XCTFail("VKF_REQUIRE_VULKAN=1 but no Vulkan backend: \(TestBackends.vulkanResult)")
    }
    throw XCTSkip("no Vulkan device")
  }

  /// A fixture file of Tests/VKFPEFTTests/Fixtures.
  static func fixture(_ name: String) throws -> SafetensorsFile {
    let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("Fixtures").appendingPathComponent(name)
    return try SafetensorsFile(contentsOf: url)
  }
}

/// A single projection with an adapter, outside any model (for per-op checks).
struct LoRATestProjection {
  let backend: Backend
  var linear: Linear
  let adapter: LoRAAdapter
  let workspace: LoRAWorkspace

  /// W (out, in) U(−0.5, 0.5), bias optional, A and B seeded (B nonzero), DoRA's m seeded.
  init(on be: Backend, inF: Int, outF: Int, r: Int, scaling: Float, dropout: Float = 0,
       dora: Bool = false, bias: Bool = true, seed: UInt64 = 1) throws {
    backend = be
    workspace = LoRAWorkspace(backend: be)
    try workspace.setDropoutSeed(seed)
    let w = try be.tensor(TestData.uniform(outF * inF, seed: seed &+ 1, -0.5, 0.5), shape: [outF, inF])
    let b = bias ? try be.tensor(TestData.uniform(outF, seed: seed &+ 2), shape: [outF]) : nil
    func t(_ s: [Int], _ k: UInt64, _ lo: Float = -0.5, _ hi: Float = 0.5) throws -> Tensor {
      try be.tensor(TestData.uniform(s.reduce(1, *), seed: seed &+ k, lo, hi), shape: s)
    }
    func zeros(_ s: [Int]) throws -> Tensor { let z = try be.allocate(s); try be.fill(z, value: 0); return z }
    adapter = try LoRAAdapter(a: try t([r, inF], 3), b: try t([outF, r], 4), aGrad: try zeros([r, inF]),
                              bGrad: try zeros([outF, r]), magnitude: dora ? try t([outF], 5, 1, 3) : nil,
                              magnitudeGrad: dora ? try zeros([outF]) : nil, scaling: scaling,
                              dropout: dropout, index: 0, workspace: workspace)
    linear = Linear(weight: w, bias: b)
    linear.adapter = adapter
  }

  /// y = forward(x).
  func forward(_ x: [Float], rows: Int) throws -> [Float] {
    let xt = try backend.tensor(x, shape: [rows, linear.inFeatures])
    let y = try backend.allocate([rows, linear.outFeatures])
    try linear.forward(backend, xt, into: y)
    return try backend.floats(y)
  }

  /// Forward then backward with dy: (y, dx); the adapter's gradients accumulate.
  func forwardBackward(_ x: [Float], dy: [Float], rows: Int) throws -> (y: [Float], dx: [Float]) {
    let xt = try backend.tensor(x, shape: [rows, linear.inFeatures])
    let y = try backend.allocate([rows, linear.outFeatures])
    try linear.forward(backend, xt, into: y)
    let yv = try backend.floats(y)
    let dyt = try backend.tensor(dy, shape: [rows, linear.outFeatures])
    let dx = try backend.allocate([rows, linear.inFeatures])
    let ones = try backend.allocate([rows]); try backend.fill(ones, value: 1)
    try linear.backward(backend, dy: dyt, x: xt, dx: dx, accumulateInput: false, ones: ones)
    return (yv, try backend.floats(dx))
  }

  /// The current values of a tensor.
  func values(_ t: Tensor) throws -> [Float] { try backend.floats(t) }
}

/// Plain row-major host math for the composed references, in Double.
enum LoRAHostMath {
  /// C (m, n) = A (m, k) · B (k, n), with B given transposed when `bT` (B stored (n, k)).
  static func matmul(_ a: [Double], _ b: [Double], m: Int, k: Int, n: Int, bT: Bool = false) -> [Double] {
    var c = [Double](repeating: 0, count: m * n)
    for i in 0..<m { for j in 0..<n {
      var s = 0.0
      for l in 0..<k { s += a[i * k + l] * (bT ? b[j * k + l] : b[l * n + j]) }
      c[i * n + j] = s
    } }
    return c
  }

  /// Aᵀ (n, m) of A (m, n).
  static func transpose(_ a: [Double], m: Int, n: Int) -> [Double] {
    var t = [Double](repeating: 0, count: m * n)
    for i in 0..<m { for j in 0..<n { t[j * m + i] = a[i * n + j] } }
    return t
  }

  static func d(_ x: [Float]) -> [Double] { x.map(Double.init) }
  static func f(_ x: [Double]) -> [Float] { x.map(Float.init) }
}
