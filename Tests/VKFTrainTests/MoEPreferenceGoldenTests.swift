// DPO on a mixture-of-experts model with the load-balancing loss vs TRL's DPOTrainer formula
// on transformers + PEFT (tools/make_moe_preference_golden.py): the tiny Mixtral fixture
// (4 experts, top-2, router_aux_loss_coef 0.5), LoRA on q/k/v/o, reference = adapter off.
import Foundation
import XCTest
import VKFCore
import VKFData
import VKFModel
import VKFPEFT
import VKFTestSupport
@testable import VKFTrain

final class MoEPreferenceGoldenTests: XCTestCase {
  /// Loss: f32 log-softmax sums of ≤ 7 terms plus the load-balancing term (E products of means),
  /// as `PreferenceGoldenTests` and `MoEGoldenTests` bound them.
  static let lossRelativeTolerance = 1e-5
  /// LoRA gradients: the dense preference bound; the load-balancing term adds short sums
  /// through the router's softmax (measured NMSE ≤ 2.2e-12 on both backends).
  static let gradientNMSE = 1e-9, gradientMaxAbs = 1e-5

  private struct Meta: Decodable {
    var beta: Double
    var router_aux_loss_coef: Double
    var seq_length: Int
  }

  private static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("Fixtures")
  private static let golden = fixtures.deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("VKFModelTests/Fixtures/golden")

  private func load() throws -> (Meta, SafetensorsFile) {
    let meta = try JSONDecoder().decode(Meta.self, from: Data(contentsOf: Self.fixtures.appendingPathComponent("moe_preference_golden.json")))
    return (meta, try SafetensorsFile(contentsOf: Self.fixtures.appendingPathComponent("moe_preference_golden.safetensors")))
  }

  /// The Mixtral fixture with `coefficient` as its load-balancing weight, and its LoRA.
  private func task(on backend: Backend, _ file: SafetensorsFile, _ meta: Meta,
                    coefficient: Float) throws -> DPOTask {
    let url = Self.golden.appendingPathComponent("mixtral.config.json")
    var shape = try TransformerShape(config: try DecoderConfig.load(from: url), file: url.path)
    XCTAssertEqual(shape.moe?.declaredAuxLossCoefficient, Float(meta.router_aux_loss_coef))
    shape.moe?.auxLossCoefficient = coefficient
    let source = try SafetensorsFile(contentsOf: Self.golden.appendingPathComponent("mixtral.weights.safetensors"))
    let model = try DecoderModel(weights: try DecoderWeights(from: source, shape: shape, backend: backend, trainable: .none))
    let lora = try LoRAModel(weights: model.weights,
                             config: LoRAConfig(r: 4, alpha: 8, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj"]),
                             seed: 1)
    var initial: [String: [Float]] = [:]
    for t in lora.trainableTensors { initial[t.name] = try file.floats("init." + t.name) }
    XCTAssertEqual(initial.count, 16, "q/k/v/o A and B on 2 layers")
    try lora.load(initial)
    return try DPOTask(model: model, lora: lora, loss: DPOLossConfig(type: .sigmoid, beta: meta.beta))
  }

  private func batches(_ file: SafetensorsFile, _ t: Int, pairs: Int) throws -> [Batch] {
    try PreferenceGoldenFile.batches(file, tokens: t, pairs: pairs)
  }

  private func close(_ a: Double, _ e: Double, _ what: String) {
    XCTAssertLessThanOrEqual(abs(a - e), Self.lossRelativeTolerance * max(1, abs(e)), "\(what): \(a) vs \(e)")
  }

  private func checkGradients(_ task: DPOTask, _ file: SafetensorsFile, prefix: String, _ what: String) throws {
    try PreferenceGoldenFile.checkGradients(task, file, prefix: prefix, nmse: Self.gradientNMSE,
                                            maxAbs: Self.gradientMaxAbs, what)
  }

  func test_dpoWithAuxLoss_matchesTRL_cpu() throws { try check(on: TestBackends.cpu) }
  func test_dpoWithAuxLoss_matchesTRL_vulkan() throws { try check(on: try Tiny.vulkanOrSkip()) }

  /// The unstaged step, the replayed step (rows padded to 64 tokens: the padding stays out of
  /// the load-balancing counts; the reference from the adapter-off pass or precomputed) and
  /// two accumulated micro-batches of one pair each (each
  /// micro-batch's own aux, weighted by its share of the step's pairs) match TRL's loss and
  /// LoRA gradients.
  private func check(on backend: Backend) throws {
    let (meta, file) = try load()
    let coefficient = Float(meta.router_aux_loss_coef)
    let whole = try batches(file, meta.seq_length, pairs: 2)
    XCTAssertEqual(whole.count, 1)
    let eager = try task(on: backend, file, meta, coefficient: coefficient)
    try eager.zeroGradients()
    let loss = try eager.forwardBackward(whole[0], lossNormalizer: eager.lossNormalizer(for: whole), dropoutSeed: 0)
    close(Double(loss), Double(try file.floats("whole.loss")[0]), "unstaged loss on \(backend.name)")
    try checkGradients(eager, file, prefix: "whole.grad.", "unstaged on \(backend.name)")

    let cases = [("whole", whole, false), ("whole", whole, true), ("accum", try batches(file, meta.seq_length, pairs: 1), false)]
    for (name, micro, precompute) in cases {
      var task = try task(on: backend, file, meta, coefficient: coefficient)
      if precompute {
        // Reference log-probs from a pass of their own: the load-balancing term stays out of them.
        let examples = (0..<whole[0].batchSize).map { ReferenceLogProbs.rowExample(whole[0], $0) }
        let model = task.model, adapterOff = task
        guard case .disabledAdapter(let setEnabled) = task.reference else { return XCTFail("adapter-off reference") }
        setEnabled(false)
        let refs = try ReferenceLogProbs.compute(model: model, examples: examples, batchSize: 4, padID: 0)
        setEnabled(true)
        task = try DPOTask(model: model, trainables: task.trainableTensors, zero: { try adapterOff.zeroGradients() },
                           reference: .precomputed(refs), loss: task.loss)
      }
      let optimizer = try AdamW(parameters: task.trainableTensors, backend: backend)
      let engine = try ReplayedSteps(task: task, optimizer: optimizer, maxTokens: StepShape.granularity,
                                     shapeGranularity: StepShape.granularity)
      let what = "replayed \(name) (\(micro.count) micro-batches\(precompute ? ", precomputed reference" : "")) on \(backend.name)"
      let out = try engine.step(micro, dropoutSeeds: micro.map { _ in 0 }, lossNormalizer: task.lossNormalizer(for: micro),
                                lr: 0)
      close(Double(out.loss), Double(try file.floats(name + ".loss")[0]), what + " loss")
      try checkGradients(task, file, prefix: name + ".grad.", what)
    }
  }

  /// With the coefficient 0 the loss is TRL's DPO loss alone (the golden's `dpo` term): the
  /// load-balancing term above is really there, with the weight it is given.
  func test_coefficientZero_givesTheDPOLossAlone() throws {
    let (meta, file) = try load()
    let whole = try batches(file, meta.seq_length, pairs: 2)
    let task = try task(on: TestBackends.cpu, file, meta, coefficient: 0)
    try task.zeroGradients()
    let loss = try task.forwardBackward(whole[0], lossNormalizer: task.lossNormalizer(for: whole), dropoutSeed: 0)
    close(Double(loss), Double(try file.floats("whole.dpo")[0]), "DPO loss without the load-balancing term")
    let aux = Double(try file.floats("whole.aux")[0])
    XCTAssertGreaterThan(meta.router_aux_loss_coef * aux, 0.1, "the fixture's term is large enough to notice")
  }
}
