import Foundation
import VKFModel
import VKFPEFT
import VKFTrain

/// QLoRA's base: the seven projections of every layer quantised to NF4 in place.
enum Quantization {
  /// Quantises `weights` (before adapters are attached, so DoRA starts from the NF4 base as in
  /// PEFT) and logs the memory saved.
  static func quantize(_ weights: LlamaWeights, doubleQuant: Bool, log: (String) -> Void) throws {
    let r = try QLoRA.quantize(weights, options: .init(doubleQuant: doubleQuant))
    log("QLoRA: \(r.projections) projections to NF4\(doubleQuant ? " (double-quantised scales)" : ""): "
      + "\(MemoryEstimate.format(r.denseBytes)) → \(MemoryEstimate.format(r.quantizedBytes)), "
      + "saved \(MemoryEstimate.format(r.savedBytes))")
  }
}
