import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport
@testable import VKFPEFT

/// Merging adapters into the base: same logits as the adapter-on model and as peft's
/// `merge_and_unload`, refusal of NF4 bases.
final class MergeAdapterTests: XCTestCase {
  /// Merged vs adapter-on logits: W + s·BA rounds once more than the two-path forward
  /// (and DoRA's m/‖·‖ is applied to W' instead of to the output); measured ≤ 1e-13 NMSE,
  /// ≤ 1e-6 max abs on CPU and lavapipe. 100× headroom; a missing scaling or a wrong
  /// DoRA norm axis gives NMSE > 1e-4.
  static let mergedNMSE = 1e-11
  static let mergedMaxAbs = 1e-5

  func test_merge_equalsAdapterOnAndPEFTMerge_cpu() throws { try check(on: TestBackends.cpu) }
  func test_merge_equalsAdapterOnAndPEFTMerge_vulkan() throws { try check(on: try PEFTTestSupport.vulkanOrSkip()) }

  private func check(on backend: Backend) throws {
    let expected = try PEFTFixture.expected(), ids = try PEFTFixture.ids()
    var report: [String] = []
    for name in ["lora", "dora"] {
      let weights = try PEFTFixture.base(on: backend)
      let lora = try PEFTAdapterFiles.load(PEFTFixture.adapter(name), into: weights)
      lora.training = false
      let adapterOn = try PEFTFixture.logits(weights, ids: ids)
      try Merge.merge(lora)
      var attached = 0
      weights.updateProjections { _, linear in if linear.adapter != nil { attached += 1 } }
      XCTAssertEqual(attached, 0, "merge detaches every adapter")
      let merged = try PEFTFixture.logits(weights, ids: ids)
      report.append(PEFTTestSupport.compare("\(name) merged vs adapter on", adapterOn, merged,
                                            nmse: Self.mergedNMSE, maxAbs: Self.mergedMaxAbs))
      report.append(PEFTTestSupport.compare("\(name) merged vs peft merge_and_unload",
                                            try expected.floats("logits.\(name).merged"), merged,
                                            nmse: Self.mergedNMSE, maxAbs: Self.mergedMaxAbs))
      XCTAssertGreaterThan(Compare.nmse(try expected.floats("logits.base"), merged), 1e-4,
                           "\(name): the merge changed the model")
    }
    print("merge on \(backend.name): " + report.joined(separator: "; "))
  }

  func test_merge_nf4Base_refusedBeforeAnythingChanges() throws {
    let be = TestBackends.cpu
    let weights = try PEFTFixture.base(on: be)
    let module = "model.layers.1.self_attn.q_proj"
    try weights.updateProjections { name, linear in
      guard name == module, let w = linear.denseWeight else { return }
      linear.base = .nf4(try NF4Weight.quantizing(try be.floats(w), rows: linear.outFeatures,
                                                  cols: linear.inFeatures, on: be))
    }
    let lora = try LoRAModel(weights: weights, config: LoRAConfig(r: 2, targetModules: ["q_proj", "v_proj"]),
                             seed: 5)
    try PEFTTestSupport.randomize(lora, seed: 9)
    let before = try weights.parameters.mapValues { try be.floats($0) }
    XCTAssertThrowsError(try Merge.merge(lora)) { error in
      let message = "\(error)"
      XCTAssertTrue(message.contains(module) && message.contains("NF4") && message.contains("f32"), message)
      XCTAssertFalse(message.contains("\n"), message)
    }
    for (name, values) in before {
      XCTAssertEqual(try be.floats(try XCTUnwrap(weights.parameters[name])).map(\.bitPattern),
                     values.map(\.bitPattern), "\(name) untouched by a refused merge")
    }
    var attached = 0
    weights.updateProjections { _, linear in if linear.adapter != nil { attached += 1 } }
    XCTAssertEqual(attached, lora.adapters.count, "adapters stay attached after a refused merge")
  }
}
