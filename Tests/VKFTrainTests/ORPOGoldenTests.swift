// ORPO on the tiny fixture model vs TRL ORPOTrainer's formula on PyTorch + PEFT
// (tools/make_orpo_golden.py): the unstaged and the replayed step, on the CPU and on Vulkan.
import Foundation
import XCTest
import VKFCore
import VKFData
import VKFModel
import VKFPEFT
import VKFTestSupport
@testable import VKFTrain

final class ORPOGoldenTests: XCTestCase {
  /// Loss, NLL and log odds: f32 log-softmax sums of ≤ 10 terms, as PreferenceGoldenTests bounds them.
  static let lossRelativeTolerance = 1e-5
  /// LoRA gradients: the preference goldens' bound (the same f32 ops in another order).
  static let gradientNMSE = 1e-9, gradientMaxAbs = 1e-5

  private struct Meta: Decodable { var beta: Double; var seq_length: Int }

  private static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("Fixtures")

  private func load() throws -> (Meta, SafetensorsFile) {
    let meta = try JSONDecoder().decode(Meta.self, from: Data(contentsOf: Self.fixtures.appendingPathComponent("orpo_golden.json")))
    return (meta, try SafetensorsFile(contentsOf: Self.fixtures.appendingPathComponent("orpo_golden.safetensors")))
  }

  private func task(on backend: Backend, _ file: SafetensorsFile, beta: Double) throws -> DPOTask {
    let (model, lora) = try GoldenLoRAModel.load(on: backend, file)
    return try DPOTask(model: model, lora: lora, loss: .orpo(beta: beta))
  }

  /// The fixture's rows without their padding (id 0 ends each row), as one batch.
  private func batch(_ file: SafetensorsFile, _ t: Int) throws -> Batch {
    try XCTUnwrap(try PreferenceGoldenFile.batches(file, tokens: t, pairs: 2).first)
  }

  private func close(_ a: Double, _ e: Double, _ what: String) {
    XCTAssertLessThanOrEqual(abs(a - e), Self.lossRelativeTolerance * max(1, abs(e)), "\(what): \(a) vs \(e)")
  }

  /// Loss, TRL's logged values and every LoRA gradient against the golden.
  private func checkStep(_ task: DPOTask, loss: Float, metrics: [String: Double], _ file: SafetensorsFile,
                         beta: Double, _ what: String) throws {
    close(Double(loss), Double(try file.floats("loss")[0]), "\(what) loss")
    let logps = try file.floats("logps").map(Double.init), odds = try file.floats("log_odds").map(Double.init)
    close(metrics["nll_loss"] ?? .nan, Double(try file.floats("nll")[0]), "\(what) nll_loss")
    close(metrics["loss"] ?? .nan, Double(try file.floats("loss")[0]), "\(what) logged loss")
    close(metrics["logps/chosen"] ?? .nan, (logps[0] + logps[2]) / 2, "\(what) logps/chosen (averaged)")
    close(metrics["rewards/rejected"] ?? .nan, beta * (logps[1] + logps[3]) / 2, "\(what) rewards/rejected")
    close(metrics["log_odds_chosen"] ?? .nan, (odds[0] + odds[1]) / 2, "\(what) log_odds_chosen")
    let ratio = odds.map(PreferenceLossMath.logSigmoid).reduce(0, +) / 2
    close(metrics["log_odds_ratio"] ?? .nan, ratio, "\(what) log_odds_ratio")
    try PreferenceGoldenFile.checkGradients(task, file, prefix: "grad.", nmse: Self.gradientNMSE,
                                            maxAbs: Self.gradientMaxAbs, what)
  }

  func test_orpo_matchesTRL_cpu() throws { try check(on: TestBackends.cpu) }
  func test_orpo_matchesTRL_vulkan() throws { try check(on: try Tiny.vulkanOrSkip()) }

  /// The unstaged step, then the replayed one (rows padded to 64 tokens, the odds ratio and the
  /// NLL on the device, AdamW at lr 0).
  private func check(on backend: Backend) throws {
    let (meta, file) = try load()
    let b = try batch(file, meta.seq_length)
    let eager = try task(on: backend, file, beta: meta.beta)
    try eager.zeroGradients()
    let loss = try eager.forwardBackward(b, lossNormalizer: eager.lossNormalizer(for: [b]), dropoutSeed: 0)
    try checkStep(eager, loss: loss, metrics: eager.takeMetrics(training: true), file, beta: meta.beta,
                  "unstaged on \(backend.name)")

    let staged = try task(on: backend, file, beta: meta.beta)
    let optimizer = try AdamW(parameters: staged.trainableTensors, backend: backend)
    let engine = try ReplayedSteps(task: staged, optimizer: optimizer, maxTokens: StepShape.granularity,
                                   shapeGranularity: StepShape.granularity)
    let out = try engine.step([b], dropoutSeeds: [0], lossNormalizer: staged.lossNormalizer(for: [b]), lr: 0)
    staged.absorbStepMetrics(out.taskMetrics)
    try checkStep(staged, loss: out.loss, metrics: staged.takeMetrics(training: true), file, beta: meta.beta,
                  "replayed on \(backend.name)")
    // Evaluation reports the same loss per pair.
    let e = try staged.evaluate(b)
    close(e.lossSum / Double(e.tokens), Double(try file.floats("loss")[0]), "evaluation on \(backend.name)")
  }

  /// ORPO refuses DPO's settings, and a reference.
  func test_orpo_refusesDPOSettings() throws {
    var c = DPOLossConfig.orpo()
    c.rpoAlpha = 0.5
    XCTAssertThrowsError(try c.validate())
    c = .orpo(); c.labelSmoothing = 0.1
    XCTAssertThrowsError(try c.validate())
  }
}
