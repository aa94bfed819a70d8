import Foundation
import VKFCore
import VKFModel
import VKFPEFT
import VKFTrain

/// The model's weights for a run: f32 (LoRA, full) or, for QLoRA, the seven projections of
/// every layer quantised to NF4 on the host as they are read, so the f32 projections never
/// reach the device — or, when the quantisation cache holds this source's NF4 base, that base
/// uploaded as it is.
enum Quantization {
  /// Loads `loaded`'s weights for `method` (full: every parameter trainable) and, for QLoRA,
  /// logs the memory saved and where the base came from.
  /// `frozenStorage` f16 / bf16 (mixed precision) keeps the frozen matrices 16-bit.
  /// `cache`: the NF4 base cache's directory, or nil for none.
  static func weights(_ loaded: LoadedModel, method: FineTuneMethod, doubleQuant: Bool,
                      frozenStorage: DType = .f32, backend: Backend, cache: URL?,
                      log: (String) -> Void) throws -> DecoderWeights {
    if frozenStorage != .f32 {
      log(method == .full
        ? "mixed precision: saved activations stored \(frozenStorage) (without gradient checkpointing); every "
          + "parameter trains, so the weights stay f32; f32 accumulation and AdamW state"
        : "mixed precision: frozen weights and saved activations (without gradient checkpointing) stored "
          + "\(frozenStorage) on the device; f32 accumulation, f32 trained parameters and AdamW state")
    }
    if method == .qlora, loaded.weights is QuantizedBaseSource {
      throw RecipeError("\(loaded.location.url.path) is already an int8 (compressed-tensors) checkpoint: train LoRA on its "
        + "int8 projections with --method lora, or quantise the f32 model with --method qlora")
    }
    guard method == .qlora else {
      return try DecoderWeights(from: loaded.weights, shape: loaded.shape, backend: backend,
                              trainable: method == .full ? .all : .none, frozenStorage: frozenStorage)
    }
    let options = QLoRA.Options(doubleQuant: doubleQuant)
    let start = Date()
    var stored: (QuantizedBaseCache, String)?
    if let cache {
      if let reason = QuantizedBaseCache.unsupportedReason(source: loaded.weights, shape: loaded.shape) {
        log("QLoRA: NF4 base not cached (\(reason))")
      } else {
        let c = QuantizedBaseCache(directory: cache)
        let key = try c.key(source: loaded.weights, shape: loaded.shape, options: options)
        do {
          if let bases = try c.load(key: key, backend: backend) {
            let weights = try DecoderWeights(from: loaded.weights, shape: loaded.shape, backend: backend, trainable: .none,
                                             frozenStorage: frozenStorage, cachedBases: bases)
            log("QLoRA: \(bases.count) NF4 projections from the cache \(c.url(for: key).path) in "
              + String(format: "%.2f s", Date().timeIntervalSince(start)))
            return weights
          }
        } catch {
          log("QLoRA: the cached NF4 base is unusable (\(error)); quantising again")
        }
        stored = (c, key)
      }
    }
    var r = QuantizationReport()
    let weights = try QLoRA.load(from: loaded.weights, shape: loaded.shape, backend: backend,
                                 options: options, frozenStorage: frozenStorage, report: &r)
    log("QLoRA: \(r.projections) projections to NF4 on the host\(doubleQuant ? " (double-quantised scales)" : ""): "
      + "\(MemoryEstimate.format(r.denseBytes)) → \(MemoryEstimate.format(r.quantizedBytes)) on the device, "
      + "saved \(MemoryEstimate.format(r.savedBytes)), in " + String(format: "%.2f s", Date().timeIntervalSince(start)))
    if let (c, key) = stored {
      // A cache that cannot be written costs the next run the quantisation, nothing more.
      do {
        try c.store(weights, key: key)
        log("QLoRA: NF4 base cached at \(c.url(for: key).path)")
      } catch {
        log("QLoRA: NF4 base not cached: \(error)")
      }
    }
    return weights
  }
}

extension TrainSettings {
  /// The NF4 base cache directory a QLoRA run uses, or nil with `quantization_cache: false`.
  var quantizationCacheSetting: URL? {
    guard quantizationCache else { return nil }
    return quantizationCacheDir.map { URL(fileURLWithPath: $0) } ?? QuantizedBaseCache.defaultDirectory()
  }
}
