import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFPEFT
import VKFTestSupport
@testable import VKFTrain

/// The memory estimate's categories, its budget check and its advice.
final class MemoryEstimateTests: XCTestCase {
  /// SmolLM2-135M's shape: the sizes users see.
  static let smol = TransformerShape(hidden: 576, layers: 30, heads: 9, kvHeads: 3, intermediate: 1536, vocab: 49152,
                                     rmsNormEps: 1e-5, ropeTheta: 100_000, tiedEmbeddings: true, qkvBias: false)

  func bytes(_ e: MemoryEstimate, _ c: MemoryEstimate.Category) -> (device: Int, host: Int) {
    let l = e.lines.first { $0.category == c }
    return (l?.deviceBytes ?? -1, l?.hostBytes ?? -1)
  }

  func test_fullFineTuning_gradientsAndStateFollowParameters() {
    let s = Self.smol
    let e = MemoryEstimate(shape: s, settings: .init(microBatchSize: 1, seqLength: 256, fullFineTuning: true))
    let params = s.parameterShapes.reduce(0) { $0 + $1.shape.reduce(1, *) }
    XCTAssertEqual(bytes(e, .weights).device, 4 * params)
    // Gradients: every parameter, each view rounded up to 64 floats as DecoderWeights carves them.
    let grads = bytes(e, .gradients).device
    XCTAssertGreaterThanOrEqual(grads, 4 * params)
    XCTAssertLessThan(grads, 4 * params + 4 * 64 * s.parameterShapes.count)
    XCTAssertEqual(bytes(e, .optimizerState).device, 2 * grads)
    XCTAssertEqual(bytes(e, .adapters).device, 0)
  }

  /// A mixture-of-experts model's weights count every expert of every sparse layer (Mixtral
  /// 8x7B's shape: 46.7 B parameters, of which the experts are 45.1 B).
  func test_experts_countEveryExpert() {
    var s = TransformerShape(hidden: 4096, layers: 32, heads: 32, kvHeads: 8, intermediate: 14336, vocab: 32000,
                             rmsNormEps: 1e-5, ropeTheta: 1e6, tiedEmbeddings: false, qkvBias: false)
    s.moe = MoEShape(style: .mixtral, experts: 8, topK: 2, intermediate: 14336, normalizeTopK: true,
                     sparseLayers: Array(repeating: true, count: 32))
    let e = MemoryEstimate(shape: s, settings: .init(microBatchSize: 1, seqLength: 256))
    let params = s.parameterShapes.reduce(0) { $0 + $1.shape.reduce(1, *) }
    XCTAssertEqual(params, 46_702_792_704)
    XCTAssertEqual(bytes(e, .weights).device, 4 * params)
  }

  /// Mixed precision stores frozen matrices in 2 bytes (norms stay f32); full fine-tuning
  /// trains every matrix, so its f32 masters are all there is.
  func test_halfFrozenStorage_halvesFrozenMatrices() {
    let s = Self.smol
    let matrices = s.parameterShapes.filter { $0.shape.count == 2 }.reduce(0) { $0 + $1.shape.reduce(1, *) }
    let vectors = s.parameterShapes.filter { $0.shape.count == 1 }.reduce(0) { $0 + $1.shape.reduce(1, *) }
    for t in [DType.bf16, .f16] {
      let e = MemoryEstimate(shape: s, settings: .init(microBatchSize: 1, seqLength: 128, adapterElements: 1000,
                                                       frozenStorage: t))
      XCTAssertEqual(bytes(e, .weights).device, 2 * matrices + 4 * vectors, "\(t)")
      let full = MemoryEstimate(shape: s, settings: .init(microBatchSize: 1, seqLength: 128, fullFineTuning: true,
                                                          frozenStorage: t))
      XCTAssertEqual(bytes(full, .weights).device, 4 * (matrices + vectors), "\(t), full fine-tuning")
    }
  }

  /// 16-bit saved activations at SmolLM2's shape: 10 of each layer's 13 saved tensors (all but
  /// 1/rms and the row statistics) in half the bytes, plus one f32 working set — over a third
  /// off the whole, as the residual stream, the scratch and the logits chunk stay f32; nothing
  /// changes with checkpointing.
  func test_halfActivations_shrinkSavedLayers() {
    let s = Self.smol
    func activations(_ type: DType, checkpointing: Bool = false) -> Int {
      bytes(MemoryEstimate(shape: s, settings: .init(microBatchSize: 4, seqLength: 256, checkpointing: checkpointing,
                                                     adapterElements: 1000, activationType: type)), .activations).device
    }
    let f32 = activations(.f32), bf16 = activations(.bf16)
    XCTAssertLessThan(Double(bf16), 2.0 / 3.0 * Double(f32), "\(bf16) vs \(f32)")
    XCTAssertEqual(bf16, activations(.f16))
    XCTAssertEqual(activations(.bf16, checkpointing: true), activations(.f32, checkpointing: true))
  }

  func test_nf4Projections_shrinkWeights() {
    let s = Self.smol
    let dense = MemoryEstimate(shape: s, settings: .init(microBatchSize: 1, seqLength: 128, adapterElements: 1000))
    func estimate(doubleQuant: Bool) -> MemoryEstimate {
      MemoryEstimate(shape: s, settings: .init(microBatchSize: 1, seqLength: 128, nf4Projections: true,
                                               nf4DoubleQuant: doubleQuant, adapterElements: 1000))
    }
    let nf4 = estimate(doubleQuant: false), dq = estimate(doubleQuant: true)
    let sizes = [s.hidden * s.qWidth, s.hidden * s.kvWidth, s.hidden * s.kvWidth, s.hidden * s.qWidth,
                 s.hidden * s.intermediate, s.hidden * s.intermediate, s.hidden * s.intermediate]
    let projections = s.layers * sizes.reduce(0, +)
    // 4 bytes → 0.5 byte + 4 bytes per 64-element block.
    XCTAssertEqual(bytes(dense, .weights).device - bytes(nf4, .weights).device,
                   projections * 4 - projections / 2 - projections / 64 * 4)
    // Double-quantised scales: 1 byte per block + 4 bytes per 256 blocks of each projection
    // (SmolLM2's q_proj has 5184 blocks: 21 nested scales).
    let nested = s.layers * sizes.reduce(0) { $0 + ($1 / 64 + 255) / 256 }
    XCTAssertEqual(bytes(dense, .weights).device - bytes(dq, .weights).device,
                   projections * 4 - projections / 2 - projections / 64 - nested * 4)
    for e in [nf4, dq] {
      XCTAssertEqual(bytes(e, .adapters).device, 4000)
      XCTAssertEqual(bytes(e, .gradients).device, 4000)
    }
  }

  func test_checkpointing_keepsOneLayerOfActivations() {
    let s = Self.smol
    func activations(layers: Int, checkpointing: Bool) -> Int {
      var shape = s
      shape.layers = layers
      return bytes(MemoryEstimate(shape: shape, settings: .init(microBatchSize: 2, seqLength: 64,
                                                                  checkpointing: checkpointing)), .activations).device
    }
    let perLayerSaved = activations(layers: 3, checkpointing: false) - activations(layers: 2, checkpointing: false)
    let perLayerResidual = activations(layers: 3, checkpointing: true) - activations(layers: 2, checkpointing: true)
    XCTAssertEqual(perLayerResidual, 4 * 2 * 64 * s.hidden, "one more residual stream (N, C)")
    // 30 layers: checkpointing saves 29 layers' saved activations.
    XCTAssertEqual(activations(layers: 30, checkpointing: false) - activations(layers: 30, checkpointing: true),
                   29 * (perLayerSaved - perLayerResidual))
    XCTAssertGreaterThan(perLayerSaved, 10 * perLayerResidual)
  }

  func test_pagedState_movesToHost_windowOnDevice() {
    let e = MemoryEstimate(shape: Self.smol, settings: .init(microBatchSize: 1, seqLength: 64, fullFineTuning: true,
                                                              optimizerState: .hostVisible, optimizerWindowElements: 1 << 20))
    XCTAssertEqual(bytes(e, .optimizerState).device, 8 << 20)
    XCTAssertEqual(bytes(e, .optimizerState).host, 2 * bytes(e, .gradients).device)
    XCTAssertEqual(e.hostBytes, bytes(e, .optimizerState).host)
    XCTAssertTrue(e.table.contains("optimizer state") && e.table.contains("total"), e.table)
  }

  func test_check_throwsOneLineWithAdvice() throws {
    let e = MemoryEstimate(shape: Self.smol, settings: .init(microBatchSize: 4, seqLength: 512, adapterElements: 10_000))
    XCTAssertNoThrow(try e.check(budget: e.deviceBytes))
    XCTAssertThrowsError(try e.check(budget: e.deviceBytes - 1)) { error in
      let text = "\(error)"
      XCTAssertFalse(text.contains("\n"), text)
      for advice in ["--method qlora", "--gradient-checkpointing", "--batch-size", "--optimizer-state host", "--memory-budget"] {
        XCTAssertTrue(text.contains(advice), "\(advice) missing from: \(text)")
      }
    }
    // Knobs already used are not suggested again.
    let lean = MemoryEstimate(shape: Self.smol, settings: .init(microBatchSize: 1, seqLength: 512, checkpointing: true,
                                                                 nf4Projections: true, adapterElements: 10_000,
                                                                 optimizerState: .hostVisible))
    for used in ["qlora", "--gradient-checkpointing", "--batch-size", "--optimizer-state"] {
      XCTAssertFalse(lean.advice.contains(used), lean.advice)
    }
  }

  func test_explain_outOfMemoryOnly() {
    let e = MemoryEstimate(shape: Self.smol, settings: .init(microBatchSize: 1, seqLength: 64, adapterElements: 10))
    let explained = e.explain(VKFError.outOfMemory(detail: "allocating 1 bytes of device memory: VK_ERROR_OUT_OF_DEVICE_MEMORY"))
    XCTAssertTrue("\(explained.map { "\($0)" } ?? "")".contains("--gradient-checkpointing"))
    XCTAssertNil(e.explain(VKFError.other("something else")))
  }

  /// The LoRA count formula against the adapters LoRAModel actually creates.
  func test_loraElements_matchesLoRAModel() throws {
    let weights = try DecoderWeights(from: Tiny.weights, shape: Tiny.shape, backend: TestBackends.cpu)
    let lora = try LoRAModel(weights: weights, config: LoRAConfig(r: 4, alpha: 8), seed: 1)
    let actual = lora.trainableTensors.reduce(0) { $0 + $1.count }
    XCTAssertEqual(MemoryEstimate.loraElements(shape: Tiny.shape, rank: 4, targetModules: Set(LoRAConfig.allLinear)), actual)
  }

  /// With LoRA on the experts too (target_parameters), on a model with a dense and a sparse layer.
  func test_loraElements_withExpertAdapters_matchesLoRAModel() throws {
    let shape = Tiny.expertShape
    let weights = try DecoderWeights(from: Tiny.expertWeights, shape: shape, backend: TestBackends.cpu, trainable: .none)
    for parameters in [["mlp.experts.gate_up_proj", "mlp.experts.down_proj"], ["down_proj"], ["experts.gate_up_proj"]] {
      let config = LoRAConfig(r: 4, alpha: 8, targetModules: ["q_proj", "v_proj"], targetParameters: parameters)
      let lora = try LoRAModel(weights: weights, config: config, seed: 1)
      defer { lora.detach() }
      let actual = lora.trainableTensors.reduce(0) { $0 + $1.count }
      XCTAssertEqual(MemoryEstimate.loraElements(shape: shape, rank: 4, targetModules: ["q_proj", "v_proj"],
                                                 expertParameters: Set(config.resolvedTargetParameters)), actual, "\(parameters)")
    }
  }
}

/// The activation estimate against the arena the model really allocates, for a plain block
/// and for one with q/k norms and sandwich norms (Gemma 3's extra saved tensors).
final class MemoryEstimateArenaTests: XCTestCase {
  func test_activations_equalModelArena() throws {
    var gemma3Like = Tiny.shape
    gemma3Like.qkNorm = true
    gemma3Like.sandwichNorms = true
    gemma3Like.normWeightOffset = 1
    var experts = Tiny.shape  // a dense layer 0 beside a sparse layer 1 (Qwen3-MoE style)
    experts.moe = MoEShape(style: .qwen3, experts: 4, topK: 2, intermediate: 8, normalizeTopK: false,
                           sparseLayers: (0..<Tiny.shape.layers).map { $0 % 2 == 1 }, auxLossCoefficient: 0.01)
    var shared = Tiny.shape  // Qwen2-MoE style: a shared expert beside the routed ones in every layer
    shared.moe = MoEShape(style: .qwen2, experts: 4, topK: 2, intermediate: 8, normalizeTopK: false,
                          sparseLayers: Array(repeating: true, count: Tiny.shape.layers), auxLossCoefficient: 0.01,
                          sharedIntermediate: 24)
    for shape in [Tiny.shape, gemma3Like, experts, shared] {
      var tensors: [String: ([Int], [Float])] = [:]
      for (i, (name, s)) in shape.parameterShapes.enumerated() {
        tensors[name] = (s, TestData.uniform(s.reduce(1, *), seed: 200 + UInt64(i), -0.15, 0.15))
      }
      let source = MemoryWeights(tensors)
      let modes: [(Bool, DType)] = shape.moe == nil ? [(false, .f32), (true, .f32), (false, .bf16), (true, .f16)]
        : [(false, .f32), (true, .f32)]  // 16-bit activations are refused with experts
      for (checkpointing, type) in modes {
        let w = try DecoderWeights(from: source, shape: shape, backend: TestBackends.cpu, trainable: .all)
        let model = try DecoderModel(weights: w, checkpointing: checkpointing, activationType: type)
        let batch = 3, tokens = 7
        let ids = TestData.ints(batch * tokens, seed: 1, upper: Int32(shape.vocab))
        try model.forward(ids: ids, targets: ids, batch: batch, computeGradients: true)
        let arena = try XCTUnwrap(model.activationStorage).byteCount
        var settings = MemoryEstimate.Settings(microBatchSize: batch, seqLength: tokens, checkpointing: checkpointing,
                                               fullFineTuning: true, activationType: type)
        settings.moeRowAlignment = TestBackends.cpu.moeRowAlignment
        let e = MemoryEstimate(shape: shape, settings: settings)
        // The estimate also counts ids, targets and positions (i32) and the model's ones
        // vector, which live outside the shared f32 arena.
        let aligned = (batch * tokens + 63) / 64 * 64
        // A shared expert's row sums need C ones when C > N.
        let onesCount = (shape.moe?.sharedIntermediate ?? 0) > 0 ? max(batch * tokens, shape.hidden) : batch * tokens
        let ints = 3 * aligned * 4, ones = (onesCount + 63) / 64 * 64 * 4
        let activations = e.lines.first { $0.category == .activations }?.deviceBytes ?? -1
        XCTAssertEqual(activations - ints - ones, arena, "q/k + sandwich norms \(shape.qkNorm), "
          + "checkpointing \(checkpointing), \(type)")
      }
    }
  }
}
