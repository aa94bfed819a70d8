import Foundation
import VKFCore
import VKFModel
import VKFPEFT
import VKFTrain

/// The model's weights for a run: f32 (LoRA, full) or, for QLoRA, the seven projections of
/// every layer quantised to NF4 on the host as they are read, so the f32 projections never
/// reach the device.
enum Quantization {
  /// Loads `loaded`'s weights for `method` (full: every parameter trainable) and, for QLoRA,
  /// logs the memory saved.
  static func weights(_ loaded: LoadedModel, method: FineTuneMethod, doubleQuant: Bool, backend: Backend,
                      log: (String) -> Void) throws -> LlamaWeights {
    guard method == .qlora else {
      return try LlamaWeights(from: loaded.weights, shape: loaded.shape, backend: backend,
                              trainable: method == .full ? .all : .none)
    }
    var r = QuantizationReport()
    let weights = try QLoRA.load(from: loaded.weights, shape: loaded.shape, backend: backend,
                                 options: .init(doubleQuant: doubleQuant), report: &r)
    log("QLoRA: \(r.projections) projections to NF4 on the host\(doubleQuant ? " (double-quantised scales)" : ""): "
      + "\(MemoryEstimate.format(r.denseBytes)) → \(MemoryEstimate.format(r.quantizedBytes)) on the device, "
      + "saved \(MemoryEstimate.format(r.savedBytes))")
    return weights
  }
}
