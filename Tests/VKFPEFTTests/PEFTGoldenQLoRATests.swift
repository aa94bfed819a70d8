import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFPEFT
import VKFTestSupport
import VKFVulkan

/// QLoRA against bitsandbytes + PEFT (tools/make_peft_fixtures.py): every projection of the
/// tiny llama quantised by `QLoRA.quantize` gives bitsandbytes' packed NF4 bytes and its
/// double-quantised absmax (including down_proj, whose 96-wide rows make blocks straddle
/// rows), and a LoRA forward/backward over the NF4 base gives PEFT's loss and LoRA gradients
/// on a model holding bitsandbytes' dequantised weights. On the CPU and on Vulkan.
final class PEFTGoldenQLoRATests: XCTestCase {
  /// Offset = mean(absmax): ours sums in Double, torch in f32 with a CPU-dependent vector
  /// order (so no implementation can match it bit for bit everywhere); measured ≤ 1 ulp apart
  /// (in 8 of the 14 weights). The nested scales max|absmax − offset| inherit that ulp.
  static let offsetRelativeTolerance: Float = 1e-6
  /// Dequantised absmax: map[code]·scale + offset, the same two f32 operations as
  /// bitsandbytes' dequantize_blockwise once code, scale and offset agree; only an offset a
  /// few ulps off could move it, by as much (≈ 4e-8 absolute at absmax ≈ 0.2).
  static let absmaxTolerance = PEFTTolerance(nmse: 1e-13, maxAbs: 1e-7)
  /// Loss over the NF4 base: the same dequantised weights in both, so the LoRA golden's bound.
  static let lossRelativeTolerance: Float = 1e-6
  /// LoRA gradients over the NF4 base: as PEFTGoldenLoRATests.gradientTolerance (the NF4 matmul
  /// dequantises to the same f32 values; only summation order differs).
  static let gradientTolerance = PEFTTolerance(nmse: 1e-10, maxAbs: 1e-5)

  func test_qlora_quantizeTinyModel_equalsBitsandbytes_cpu() throws { try checkQuantization(on: TestBackends.cpu) }
  func test_qlora_quantizeTinyModel_equalsBitsandbytes_vulkan() throws {
    try checkQuantization(on: try PEFTGoldenBackends.vulkanOrSkip())
  }
  func test_qlora_forwardBackward_equalsPEFT_cpu() throws { try checkForwardBackward(on: TestBackends.cpu) }
  func test_qlora_forwardBackward_equalsPEFT_vulkan() throws {
    try checkForwardBackward(on: try PEFTGoldenBackends.vulkanOrSkip())
  }

  /// Without double quantisation the absmax is bitsandbytes' f32 absmax exactly.
  func test_qlora_withoutDoubleQuant_keepsF32Absmax() throws {
    let g = try PEFTGoldenCase.load("qlora_llama_untied")
    let weights = try g.baseWeights(on: TestBackends.cpu, trainable: .none)
    _ = try QLoRA.quantize(weights, options: .init(blockSize: 64, doubleQuant: false))
    for (module, q) in try nf4Bases(weights) {
      XCTAssertEqual(try q.absmax(on: TestBackends.cpu), try g.file.floats("nf4.\(module).weight.absmax_fp32"),
                     module)
    }
  }

  /// The double-quantisation state itself (codes, nested scales, offset) from the f32 absmax.
  func test_qlora_doubleQuantState_equalsReference() throws {
    let g = try PEFTGoldenCase.load("qlora_llama_untied")
    XCTAssertEqual(NF4DoubleQuant.dynamicMap, try g.file.floats("dynamic_map"), "bitsandbytes' signed dynamic map")
    let names = try XCTUnwrap(g.meta.quantized)
    XCTAssertEqual(names.count, 14)
    for name in names {
      let dq = NF4DoubleQuant.encode(try g.file.floats("nf4.\(name).absmax_fp32"))
      XCTAssertEqual(dq.codes.map(Float.init), try g.file.floats("nf4.\(name).absmax_q"), "\(name) nested codes")
      let scales = try g.file.floats("nf4.\(name).nested_absmax")
      XCTAssertEqual(dq.scales.count, scales.count, "\(name) nested scales")
      for (ours, theirs) in zip(dq.scales, scales) {
        XCTAssertEqual(ours, theirs, accuracy: theirs * Self.offsetRelativeTolerance, "\(name) nested scale")
      }
      let offset = try g.file.floats("nf4.\(name).offset")[0]
      XCTAssertEqual(dq.offset, offset, accuracy: abs(offset) * Self.offsetRelativeTolerance, "\(name) offset")
    }
    // The fixture records where bitsandbytes' CPU kernel (a lookup table) took the farther code;
    // the reference codes above are the nearest ones there too.
    for d in g.meta.bitsandbytesCpuDoubleQuantDifferences ?? [] {
      let codes = NF4DoubleQuant.encode(try g.file.floats("nf4.\(d.weight).absmax_fp32")).codes
      XCTAssertEqual(Int(codes[d.block]), d.nearest, "\(d.weight) block \(d.block)")
      XCTAssertNotEqual(d.nearest, d.bitsandbytesCpu)
    }
  }

  // MARK: - Checks

  private func checkQuantization(on backend: Backend) throws {
    let g = try PEFTGoldenCase.load("qlora_llama_untied")
    let weights = try g.baseWeights(on: backend, trainable: .none)
    let report = try QLoRA.quantize(weights, options: .init(blockSize: try XCTUnwrap(g.meta.blockSize),
                                                             doubleQuant: try XCTUnwrap(g.meta.doubleQuant)))
    XCTAssertEqual(report.projections, 14)
    let bases = try nf4Bases(weights)
    XCTAssertEqual(bases.map { $0.module + ".weight" }, try XCTUnwrap(g.meta.quantized), "quantised projections")
    var gr = GoldenReport("qlora quantisation on \(backend.name)")
    for (module, q) in bases {
      let name = module + ".weight"
      XCTAssertEqual(q.blockSize, 64)
      let packed = try backend.download(q.packed, as: UInt8.self)
      let expected = try g.file.floats("nf4.\(name).packed").map { UInt8($0) }
      XCTAssertEqual(packed.count, expected.count, name)
      let wrong = zip(packed, expected).enumerated().filter { $0.element.0 != $0.element.1 }
      XCTAssertTrue(wrong.isEmpty, "\(name): \(wrong.count) packed bytes differ from bitsandbytes, first at "
        + "\(wrong.first.map { "byte \($0.offset): \($0.element.0) vs \($0.element.1)" } ?? "")")
      gr.compare(name + " absmax", group: "absmax", try g.file.floats("nf4.\(name).absmax"),
                 try q.absmax(on: backend), Self.absmaxTolerance)
    }
    gr.print()
    if let vk = backend as? VulkanBackend {
      XCTAssertEqual(vk.validationMessages, []); vk.clearValidationMessages()
    }
  }

  private func checkForwardBackward(on backend: Backend) throws {
    let g = try PEFTGoldenCase.load("qlora_llama_untied")
    let c = g.meta
    let weights = try g.baseWeights(on: backend, trainable: .none)
    _ = try QLoRA.quantize(weights, options: .init(blockSize: try XCTUnwrap(c.blockSize),
                                                   doubleQuant: try XCTUnwrap(c.doubleQuant)))
    let config = LoRAConfig(r: try XCTUnwrap(c.r), alpha: try XCTUnwrap(c.loraAlpha), dropout: 0,
                            targetModules: LoRAConfig.allLinear, useRSLoRA: c.useRslora ?? false)
    let lora = try LoRAModel(weights: weights, config: config, seed: 1)
    try lora.load(try g.initialAdapter())
    let model = try DecoderModel(weights: weights)
    var report = GoldenReport("qlora_llama_untied on \(backend.name)")
    try lora.zeroGradients()
    try model.forward(ids: try g.ids, targets: try g.targets, batch: g.batch, computeGradients: true)
    report.compareScalar("loss", c.loss[0], try model.loss(), relative: Self.lossRelativeTolerance)
    try model.backward()
    let expected = try g.tensors(prefix: "grad")
    let trainable = lora.trainableTensors
    XCTAssertEqual(Set(trainable.map(\.name)), Set(expected.keys), "PEFT keys")
    for t in trainable {
      report.compare("grad \(t.name)", group: "grad", expected[t.name] ?? [], try backend.floats(t.gradient),
                     Self.gradientTolerance)
    }
    report.print()
    if let vk = backend as? VulkanBackend {
      XCTAssertEqual(vk.validationMessages, []); vk.clearValidationMessages()
    }
  }

  /// Every projection's NF4 base by module name, in layer order; fails on a dense one.
  private func nf4Bases(_ weights: DecoderWeights) throws -> [(module: String, q: NF4Weight)] {
    var out: [(String, NF4Weight)] = []
    var dense: [String] = []
    weights.updateProjections { module, linear in
      if case .nf4(let q) = linear.base { out.append((module, q)) } else { dense.append(module) }
    }
    XCTAssertEqual(dense, [], "projections left dense")
    return out
  }
}
