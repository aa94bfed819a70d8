import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport

// Shared pieces of the PEFT golden tests (fixtures: tools/make_peft_fixtures.py).

/// One case of Tests/VKFPEFTTests/Fixtures/golden: its tensors and its entry in
/// peft_golden.json.
struct PEFTGoldenCase {
  let name: String
  let file: SafetensorsFile
  let meta: PEFTGoldenMeta.Case
  /// Rows of ids/targets (tools/make_fixtures.py's B).
  let batch = 2

  static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("Fixtures/golden")

  static func load(_ name: String) throws -> PEFTGoldenCase {
    let data = try Data(contentsOf: directory.appendingPathComponent("peft_golden.json"))
    let decoder = JSONDecoder()
    decoder.keyDecodingStrategy = .convertFromSnakeCase
    let all = try decoder.decode(PEFTGoldenMeta.self, from: data)
    let meta = try XCTUnwrap(all.cases[name], "peft_golden.json has no case \(name)")
    return PEFTGoldenCase(name: name, meta: meta,
                          file: try SafetensorsFile(contentsOf: directory.appendingPathComponent("\(name).safetensors")))
  }

  private init(name: String, meta: PEFTGoldenMeta.Case, file: SafetensorsFile) {
    self.name = name; self.meta = meta; self.file = file
  }

  /// Token ids (B, T), stored I32.
  var ids: [Int32] { get throws { try file.floats("ids").map { Int32($0) } } }
  /// Targets (B, T), −100 ignored, stored I32.
  var targets: [Int32] { get throws { try file.floats("targets").map { Int32($0) } } }

  /// Every tensor named `<prefix>.<key>`, by key.
  func tensors(prefix: String) throws -> [String: [Float]] {
    var out: [String: [Float]] = [:]
    for n in file.tensorNames where n.hasPrefix(prefix + ".") {
      out[String(n.dropFirst(prefix.count + 1))] = try file.floats(n)
    }
    return out
  }

  /// The adapter's initial values: this case's `init.*`, or those of the case it names.
  func initialAdapter() throws -> [String: [Float]] {
    if let other = meta.initFrom { return try PEFTGoldenCase.load(other).tensors(prefix: "init") }
    return try tensors(prefix: "init")
  }

  /// The tiny base model of tools/make_fixtures.py (Tests/VKFModelTests/Fixtures/golden),
  /// whose shape tools/make_fixtures.py's COMMON fixes.
  func baseWeights(on backend: Backend, trainable: TrainableParameters) throws -> DecoderWeights {
    let dir = PEFTGoldenCase.directory.deletingLastPathComponent().deletingLastPathComponent()
      .deletingLastPathComponent().appendingPathComponent("VKFModelTests/Fixtures/golden")
    let shape = TransformerShape(hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 96,
                                 vocab: 97, rmsNormEps: 1e-6, ropeTheta: 10000,
                                 tiedEmbeddings: meta.model.hasSuffix("_tied"),
                                 qkvBias: meta.model.hasPrefix("qwen2"))
    let source = try SafetensorsFile(contentsOf: dir.appendingPathComponent("\(meta.model).weights.safetensors"))
    return try DecoderWeights(from: source, shape: shape, backend: backend, trainable: trainable)
  }
}

/// peft_golden.json (snake_case keys).
struct PEFTGoldenMeta: Decodable {
  let cases: [String: Case]

  struct Case: Decodable {
    let model: String
    let kind: String
    let r: Int?
    let loraAlpha: Float?
    let useRslora: Bool?
    let scaling: Float?
    let initFrom: String?
    let steps: Int?
    let maxGradNorm: Float?
    let lr: Float?
    let beta1: Float?
    let beta2: Float?
    let eps: Float?
    let weightDecay: Float?
    let loss: [Float]
    let gradNorm: [Float]?
    let clipEngaged: [Bool]?
    let trainable: Int
    let noDecay: [String]?
    let blockSize: Int?
    let doubleQuant: Bool?
    let quantized: [String]?
    let bitsandbytesCpuDoubleQuantDifferences: [LUTDifference]?
  }

  /// A double-quantised absmax where bitsandbytes' CPU lookup table took the farther code.
  struct LUTDifference: Decodable {
    let weight: String
    let block: Int
    let nearest: Int
    let bitsandbytesCpu: Int
  }
}

/// NMSE and max-abs bounds for one comparison.
struct PEFTTolerance {
  let nmse: Double
  let maxAbs: Double
}

/// Bounds for parameters after AdamW steps, element by element. Adam divides each update by
/// ≈ |g|, so an element's error is its gradient's error amplified by ≈ lr/(|g| + eps)
/// (∂(lr·g/(|g|+eps))/∂g = lr·eps/(|g|+eps)² at step 1; step 2's m̂/√v̂ has √v̂ ≥ √½·c₁|g₁|).
/// Element i after step t may differ by `floor + lr · gradientNoise[t−1] / (c₁·|g₁ᵢ| + eps)`,
/// with g₁ PyTorch's step-1 gradient and c₁ its clip factor. The NMSE bound applies to the
/// well-conditioned elements, those whose noise term is below `floor`.
struct AdamTolerance {
  /// f32 rounding of the parameter arithmetic itself.
  let floor: Double
  /// Absolute gradient error assumed at each step.
  let gradientNoise: [Double]
  /// NMSE over the well-conditioned elements.
  let nmse: Double
}

/// Collects comparisons of one test and fails on each that is out of bounds.
struct GoldenReport {
  let what: String
  var lines: [String] = []
  var worst: [String: (name: String, nmse: Double, maxAbs: Double)] = [:]

  init(_ what: String) { self.what = what }

  private mutating func note(_ group: String, _ name: String, _ nmse: Double, _ maxAbs: Double) {
    let w = worst[group] ?? (name, -1, -1)
    worst[group] = (nmse >= w.nmse ? name : w.name, max(nmse, w.nmse), max(maxAbs, w.maxAbs))
  }

  /// Compares `actual` with `expected`; `group` collects the worst errors for the summary.
  mutating func compare(_ name: String, group: String, _ expected: [Float], _ actual: [Float],
                        _ tol: PEFTTolerance, file: StaticString = #filePath, line: UInt = #line) {
    guard expected.count == actual.count else {
      return XCTFail("\(what) \(name): \(actual.count) values, expected \(expected.count)", file: file, line: line)
    }
    note(group, name, Compare.nmse(expected, actual), Compare.maxAbs(expected, actual))
    if let why = Compare.check(expected, actual, nmse: tol.nmse, maxAbs: tol.maxAbs) {
      XCTFail("\(what) \(name): \(why)", file: file, line: line)
    }
  }

  /// Compares parameters after AdamW step `step` under `tol` (see `AdamTolerance`);
  /// `gradient` is PyTorch's step-1 gradient, `clip` its clip factor.
  mutating func compareAfterAdam(_ name: String, step: Int, _ expected: [Float], _ actual: [Float],
                                 gradient: [Float], clip: Float, lr: Float, eps: Float,
                                 _ tol: AdamTolerance, file: StaticString = #filePath, line: UInt = #line) {
    guard expected.count == actual.count, gradient.count == actual.count else {
      return XCTFail("\(what) \(name): \(actual.count) values, expected \(expected.count), "
        + "\(gradient.count) gradients", file: file, line: line)
    }
    let gradientNoise = tol.gradientNoise[min(step, tol.gradientNoise.count) - 1]
    var conditioned: (e: [Float], a: [Float]) = ([], [])
    var worstRatio = (ratio: 0.0, index: 0, bound: 0.0)
    for i in expected.indices {
      let noise = Double(lr) * gradientNoise / (Double(clip * abs(gradient[i])) + Double(eps))
      let bound = tol.floor + noise
      let err = abs(Double(expected[i]) - Double(actual[i]))
      let ratio = err.isNaN ? .infinity : err / bound
      if ratio > worstRatio.ratio { worstRatio = (ratio, i, bound) }
      if noise <= tol.floor { conditioned.e.append(expected[i]); conditioned.a.append(actual[i]) }
    }
    let nmse = Compare.nmse(conditioned.e, conditioned.a)
    note("step\(step)", name, nmse, Compare.maxAbs(expected, actual))
    if worstRatio.ratio > 1 {
      let i = worstRatio.index
      XCTFail(String(format: "%@ %@ after step %d: [%d] expected %.9g, got %.9g, bound %.2e "
        + "(step-1 gradient %.3g)", what, name, step, i, expected[i], actual[i], worstRatio.bound,
        gradient[i]), file: file, line: line)
    }
    if nmse > tol.nmse {
      XCTFail(String(format: "%@ %@ after step %d: nmse %.2e over %d well-conditioned elements "
        + "(limit %.1e)", what, name, step, nmse, conditioned.e.count, tol.nmse), file: file, line: line)
    }
  }

  /// Relative comparison of one scalar.
  mutating func compareScalar(_ name: String, _ expected: Float, _ actual: Float, relative: Float,
                              file: StaticString = #filePath, line: UInt = #line) {
    lines.append("\(name) \(actual) vs \(expected)")
    XCTAssertEqual(actual, expected, accuracy: abs(expected) * relative, "\(what) \(name)", file: file, line: line)
  }

  func print() {
    let groups = worst.keys.sorted().map { g in
      String(format: "%@ worst nmse %.2e (%@), maxAbs %.2e", g, worst[g]?.nmse ?? 0, worst[g]?.name ?? "",
             worst[g]?.maxAbs ?? 0)
    }
    Swift.print("golden \(what): " + (lines + groups).joined(separator: "; "))
  }
}

/// The optimizer step exactly as the trainer takes it with Backend ops: Σgrad² of every
/// trainable tensor into one scalar (`sumOfSquares` accumulates), then `adamW` per tensor with
/// the fused global-norm clip; tensors whose `decays` is false get a hyper-parameter buffer
/// with weight decay 0 (transformers' Trainer convention for norms and biases).
final class GoldenAdamW {
  let backend: Backend
  let tensors: [TrainableTensor]
  private let moments: [(m: Tensor, v: Tensor)]
  private let sumOfSquares: Tensor
  private let hyperDecay: Tensor
  private let hyperNoDecay: Tensor

  init(_ tensors: [TrainableTensor], on backend: Backend) throws {
    self.backend = backend
    self.tensors = tensors
    moments = try tensors.map { t in
      let m = try backend.allocate(t.value.shape), v = try backend.allocate(t.value.shape)
      try backend.fill(m, value: 0); try backend.fill(v, value: 0)
      return (m, v)
    }
    sumOfSquares = try backend.allocate([1])
    hyperDecay = try backend.allocate([AdamWHyperParameters.count])
    hyperNoDecay = try backend.allocate([AdamWHyperParameters.count])
  }

  /// Step `t` (1-based) with the case's hyper-parameters; returns the global gradient norm
  /// before clipping (√Σgrad², as `clip_grad_norm_` returns it).
  func step(_ t: Int, _ c: PEFTGoldenMeta.Case) throws -> Float {
    let be = backend
    try be.fill(sumOfSquares, value: 0)
    for x in tensors { try be.sumOfSquares(x.gradient, into: sumOfSquares) }
    var h = AdamWHyperParameters(lr: try XCTUnwrap(c.lr), beta1: try XCTUnwrap(c.beta1),
                                 beta2: try XCTUnwrap(c.beta2), eps: try XCTUnwrap(c.eps),
                                 weightDecay: try XCTUnwrap(c.weightDecay), step: t,
                                 maxGradNorm: try XCTUnwrap(c.maxGradNorm))
    try be.upload(h.packed, to: hyperDecay)
    h.weightDecay = 0
    try be.upload(h.packed, to: hyperNoDecay)
    for (x, mv) in zip(tensors, moments) {
      try be.adamW(param: x.value, grad: x.gradient, m: mv.m, v: mv.v,
                   hyper: x.decays ? hyperDecay : hyperNoDecay, gradSumOfSquares: sumOfSquares)
    }
    return try be.floats(sumOfSquares)[0].squareRoot()
  }
}

/// Backends for the golden tests.
enum PEFTGoldenBackends {
  /// The Vulkan backend, or a skip (a failure with VKF_REQUIRE_VULKAN=1).
  static func vulkanOrSkip() throws -> Backend {
    if let vk = TestBackends.vulkan { return vk }
    if ProcessInfo.processInfo.environment["VKF_REQUIRE_VULKAN"] == "1" {
      XCTFail("VKF_REQUIRE_VULKAN=1 but no Vulkan backend: \(TestBackends.vulkanResult)")
    }
    throw XCTSkip("no Vulkan device")
  }
}

/// The fixture files themselves: present, small, and what the tests assume of them.
final class PEFTGoldenSupportTests: XCTestCase {
  /// tools/make_peft_fixtures.py keeps the fixtures under 1 MB in total.
  func test_fixtures_underOneMegabyte() throws {
    let files = try FileManager.default.contentsOfDirectory(at: PEFTGoldenCase.directory,
                                                            includingPropertiesForKeys: [.fileSizeKey])
    let total = try files.reduce(0) { $0 + (try $1.resourceValues(forKeys: [.fileSizeKey]).fileSize ?? 0) }
    XCTAssertGreaterThan(files.count, 5)
    XCTAssertLessThan(total, 1_000_000)
  }

  /// Clipping engages in some steps and not in others, so both paths of the fused clip are
  /// compared with PyTorch.
  func test_fixtures_coverClippedAndUnclippedSteps() throws {
    let names = ["lora_llama_untied", "lora_qwen2_tied", "lora_llama_untied_rslora", "full_llama_untied"]
    let engaged = try names.flatMap { try PEFTGoldenCase.load($0).meta.clipEngaged ?? [] }
    XCTAssertTrue(engaged.contains(true))
    XCTAssertTrue(engaged.contains(false))
  }
}
