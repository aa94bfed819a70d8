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
  /// `frozenStorage` f16 / bf16 (mixed precision) keeps the frozen matrices 16-bit.
  static func weights(_ loaded: LoadedModel, method: FineTuneMethod, doubleQuant: Bool,
                      frozenStorage: DType = .f32, backend: Backend, log: (String) -> Void) throws -> DecoderWeights {
    if frozenStorage != .f32 {
      log(method == .full
        ? "mixed precision: saved activations stored \(frozenStorage) (without gradient checkpointing); every "
          + "parameter trains, so the weights stay f32; f32 accumulation and AdamW state"
        : "mixed precision: frozen weights and saved activations (without gradient checkpointing) stored "
          + "\(frozenStorage) on the device; f32 accumulation, f32 trained parameters and AdamW state")
    }
    guard method == .qlora else {
      return try DecoderWeights(from: loaded.weights, shape: loaded.shape, backend: backend,
                              trainable: method == .full ? .all : .none, frozenStorage: frozenStorage)
    }
    var r = QuantizationReport()
    let weights = try QLoRA.load(from: loaded.weights, shape: loaded.shape, backend: backend,
                                 options: .init(doubleQuant: doubleQuant), frozenStorage: frozenStorage, report: &r)
    log("QLoRA: \(r.projections) projections to NF4 on the host\(doubleQuant ? " (double-quantised scales)" : ""): "
      + "\(MemoryEstimate.format(r.denseBytes)) → \(MemoryEstimate.format(r.quantizedBytes)) on the device, "
      + "saved \(MemoryEstimate.format(r.savedBytes))")
    return weights
  }
}
