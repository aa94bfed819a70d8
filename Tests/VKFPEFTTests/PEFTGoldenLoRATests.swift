import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFPEFT
import VKFTestSupport
import VKFVulkan

/// LoRA training steps against PyTorch + PEFT (tools/make_peft_fixtures.py): PEFT's
/// LoraConfig(r 4, alpha 8, all seven projections, dropout 0) on the tiny llama (untied) and
/// qwen2 (tied, qkv bias) models, starting from random A *and* B so every gradient is
/// nonzero: the loss, every lora_A/lora_B gradient, the global gradient norm, and the
/// adapter after one and two AdamW steps with the fused clip (engaged for llama, not for
/// qwen2), plus rsLoRA (scaling alpha/√r). On the CPU and on Vulkan.
final class PEFTGoldenLoRATests: XCTestCase {
  /// Loss: the model golden's bound (one reduction over ~30 dependent f32 ops; PEFT adds a
  /// rank-4 side path per projection). 1 ulp measured on the base model.
  static let lossRelativeTolerance: Float = 1e-6
  /// LoRA gradients: dA = s·(dy·B)ᵀ·x and dB = s·dyᵀ·(x·Aᵀ), products of backward-chain values
  /// the model golden bounds at 1e-10 NMSE; same bound and max-abs guard. A wrong scaling or
  /// a transposed factor is off by O(1).
  static let gradientTolerance = PEFTTolerance(nmse: 1e-10, maxAbs: 1e-5)
  /// Global gradient norm before clipping: one f32 sum of ~15k squares in another order.
  static let gradNormRelativeTolerance: Float = 1e-5
  /// Adapter after AdamW steps (lr 1e-2, values ~0.05), per element (see `AdamTolerance`).
  /// Floor 1e-6: f32 rounding of p·(1 − lr·wd) − lr·m̂/(√v̂ + eps) is ~1e-9, and missing weight
  /// decay shifts an element by lr·wd·|p| ≈ 5e-6, missing bias correction or a different clip
  /// factor in step 2 by ≥ 1e-4. Gradient noise: step 1, twice the measured max-abs gradient
  /// error (2.1e-7); step 2's gradients are taken where step 1 already differs, ×5.
  static let parameterTolerance = AdamTolerance(floor: 1e-6, gradientNoise: [4e-7, 2e-6], nmse: 1e-11)

  func test_lora_llamaUntied_twoSteps_cpu() throws { try check("lora_llama_untied", on: TestBackends.cpu) }
  func test_lora_qwen2TiedBias_oneStepUnclipped_cpu() throws { try check("lora_qwen2_tied", on: TestBackends.cpu) }
  func test_lora_llamaUntied_rsLoRA_cpu() throws { try check("lora_llama_untied_rslora", on: TestBackends.cpu) }
  func test_lora_llamaUntied_twoSteps_vulkan() throws {
    try check("lora_llama_untied", on: try PEFTGoldenBackends.vulkanOrSkip())
  }
  func test_lora_qwen2TiedBias_oneStepUnclipped_vulkan() throws {
    try check("lora_qwen2_tied", on: try PEFTGoldenBackends.vulkanOrSkip())
  }
  func test_lora_llamaUntied_rsLoRA_vulkan() throws {
    try check("lora_llama_untied_rslora", on: try PEFTGoldenBackends.vulkanOrSkip())
  }

  private func check(_ name: String, on backend: Backend) throws {
    let g = try PEFTGoldenCase.load(name)
    let c = g.meta
    var report = GoldenReport("\(name) on \(backend.name)")
    let weights = try g.baseWeights(on: backend, trainable: .none)
    let config = LoRAConfig(r: try XCTUnwrap(c.r), alpha: try XCTUnwrap(c.loraAlpha), dropout: 0,
                            targetModules: LoRAConfig.allLinear, useRSLoRA: c.useRslora ?? false)
    XCTAssertEqual(config.scaling, try XCTUnwrap(c.scaling), accuracy: 1e-6, "PEFT's scaling")
    let lora = try LoRAModel(weights: weights, config: config, seed: 1)
    try lora.load(try g.initialAdapter())
    let model = try DecoderModel(weights: weights)
    let trainable = lora.trainableTensors
    XCTAssertEqual(trainable.count, c.trainable, "one tensor per PEFT key")

    let expectedGrads = try g.tensors(prefix: "grad")
    XCTAssertEqual(Set(trainable.map(\.name)), Set(expectedGrads.keys), "PEFT keys")
    XCTAssertTrue(trainable.allSatisfy(\.decays), "PEFT's Trainer decays every LoRA matrix")
    let optimizer = try GoldenAdamW(trainable, on: backend)
    let ids = try g.ids, targets = try g.targets
    let gradNorm1 = try XCTUnwrap(c.gradNorm?.first)
    for step in 1...(try XCTUnwrap(c.steps)) {
      try lora.zeroGradients()
      try model.forward(ids: ids, targets: targets, batch: g.batch, computeGradients: true)
      report.compareScalar("loss\(step)", c.loss[step - 1], try model.loss(), relative: Self.lossRelativeTolerance)
      try model.backward()
      if step == 1 {
        for t in trainable {
          report.compare("grad \(t.name)", group: "grad", expectedGrads[t.name] ?? [], try backend.floats(t.gradient),
                         Self.gradientTolerance)
        }
      }
      let norm = try optimizer.step(step, c)
      report.compareScalar("gradNorm\(step)", try XCTUnwrap(c.gradNorm)[step - 1], norm,
                           relative: Self.gradNormRelativeTolerance)
      let after = try g.tensors(prefix: "step\(step)")
      XCTAssertEqual(Set(after.keys), Set(trainable.map(\.name)))
      let clip = AdamWHyperParameters.clipFactor(sumOfSquares: gradNorm1 * gradNorm1,
                                                 maxGradNorm: try XCTUnwrap(c.maxGradNorm))
      for t in trainable {
        report.compareAfterAdam(t.name, step: step, after[t.name] ?? [], try backend.floats(t.value),
                                gradient: expectedGrads[t.name] ?? [], clip: clip, lr: try XCTUnwrap(c.lr),
                                eps: try XCTUnwrap(c.eps), Self.parameterTolerance)
      }
    }
    report.print()
    if let vk = backend as? VulkanBackend {
      XCTAssertEqual(vk.validationMessages, []); vk.clearValidationMessages()
    }
  }
}
