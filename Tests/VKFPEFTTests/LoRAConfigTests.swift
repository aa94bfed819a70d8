import Foundation
import XCTest
@testable import VKFPEFT

/// LoRAConfig: scaling, target resolution, validation messages, PEFT's JSON keys.
final class LoRAConfigTests: XCTestCase {
  func test_scaling_plainAndRSLoRA() {
    XCTAssertEqual(LoRAConfig().scaling, 2)  // PEFT defaults r 8, alpha 16
    XCTAssertEqual(LoRAConfig(r: 4, alpha: 8, useRSLoRA: true).scaling, 4)
  }

  func test_resolvedTargets_expandAllLinearInPEFTOrder() {
    XCTAssertEqual(LoRAConfig(targetModules: ["all-linear"]).resolvedTargetModules, LoRAConfig.allLinear)
    XCTAssertEqual(LoRAConfig(targetModules: ["down_proj", "q_proj", "q_proj"]).resolvedTargetModules,
                   ["q_proj", "down_proj"])
  }

  func test_validate_rejectsWithOneLineMessages() {
    let bad: [(LoRAConfig, String)] = [
      (LoRAConfig(r: 0), "r must be"), (LoRAConfig(alpha: 0), "alpha must be"),
      (LoRAConfig(dropout: 1), "dropout must be in [0, 1)"), (LoRAConfig(dropout: -0.1), "dropout"),
      (LoRAConfig(targetModules: []), "empty"), (LoRAConfig(targetModules: ["qproj"]), "q_proj, k_proj"),
    ]
    for (config, fragment) in bad {
      XCTAssertThrowsError(try config.validate()) {
        let message = "\($0)"
        XCTAssertTrue(message.contains(fragment), message)
        XCTAssertFalse(message.contains("\n"), message)
      }
    }
    XCTAssertNoThrow(try LoRAConfig(r: 16, alpha: 32, dropout: 0.05, targetModules: ["all-linear"]).validate())
  }

  func test_codable_usesPEFTKeysAndDefaults() throws {
    let json = #"{"r": 16, "lora_alpha": 32, "target_modules": "all-linear", "use_dora": true}"#
    let c = try JSONDecoder().decode(LoRAConfig.self, from: Data(json.utf8))
    XCTAssertEqual(c, LoRAConfig(r: 16, alpha: 32, dropout: 0, targetModules: ["all-linear"], useDoRA: true))
    let back = try JSONSerialization.jsonObject(with: JSONEncoder().encode(c)) as? [String: Any]
    XCTAssertEqual(Set(back?.keys.map { $0 } ?? []),
                   ["r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora", "use_dora", "target_parameters"])
  }
}
