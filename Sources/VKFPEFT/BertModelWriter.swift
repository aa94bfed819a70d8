import Foundation
import VKFCore
import VKFModel

/// Writes a trained BERT as transformers' `BertForSequenceClassification` directory
/// (config.json with the input's keys plus architectures, id2label / label2id and
/// problem_type) or `BertForMaskedLM` directory (the decoder tied to the word embeddings, as
/// save_pretrained leaves it), model.safetensors under transformers' names, and the tokenizer
/// files beside the source model — `pipeline("text-classification")` / `pipeline("fill-mask")`
/// read it unmodified.
public enum BertModelWriter {
  /// Writes `weights` with `labels` (names by id; ignored for the masked-LM head) to `dir`
  /// atomically; the tokenizer files of `tokenizerSource` (a model directory) are copied.
  public static func write(weights: BertWeights, labels: [String], tokenizerSource: URL?, to dir: URL,
                           overwrite: Bool = false) throws {
    guard weights.head != .maskedLM else {
      return try write(weights, config: maskedLMConfig(weights.config.raw), tokenizerSource: tokenizerSource,
                       to: dir, overwrite: overwrite)
    }
    guard labels.count == weights.numLabels else {
      throw PEFTError("\(labels.count) label names for a classifier of \(weights.numLabels) outputs")
    }
    guard Set(labels).count == labels.count else {
      throw PEFTError("label names must differ (label2id maps each to one id): \(labels)")
    }
    try write(weights, config: classificationConfig(weights.config.raw, labels: labels), tokenizerSource: tokenizerSource,
              to: dir, overwrite: overwrite)
  }

  private static func write(_ weights: BertWeights, config: [String: Any], tokenizerSource: URL?, to dir: URL,
                            overwrite: Bool) throws {
    let tensors = weights.named.map { (name: $0.name, tensor: $0.value) }
    let sources = HFModelWriter.tokenizerFiles(near: tokenizerSource)
    try AtomicDirectory.write(to: dir, overwrite: overwrite, what: "model directory") { tmp in
      _ = try HFModelWriter.writeWeights(tensors, backend: weights.backend, into: tmp,
                                         shardBytes: HFModelWriter.defaultShardBytes)
      try AtomicDirectory.writeFile(try AtomicDirectory.jsonData(config), to: tmp.appendingPathComponent("config.json"))
      for file in sources {
        let data: Data
        do { data = try BoundedFile.read(file, BoundedFile.tokenizer) } catch {
          throw PEFTError("cannot read \(file.path) to copy it beside the model: \(error.localizedDescription)")
        }
        try AtomicDirectory.writeFile(data, to: tmp.appendingPathComponent(file.lastPathComponent))
      }
    }
  }

  /// The config of a masked LM over `raw`'s encoder (classification keys dropped).
  public static func maskedLMConfig(_ raw: [String: Any]) -> [String: Any] {
    var c = raw
    c["architectures"] = ["BertForMaskedLM"]
    for key in ["id2label", "label2id", "problem_type", "_name_or_path"] { c.removeValue(forKey: key) }
    c["tie_word_embeddings"] = true
    c["torch_dtype"] = "float32"
    return c
  }

  /// The config of a single-label classifier over `raw`'s encoder.
  public static func classificationConfig(_ raw: [String: Any], labels: [String]) -> [String: Any] {
    var c = raw
    c["architectures"] = ["BertForSequenceClassification"]
    c["id2label"] = Dictionary(uniqueKeysWithValues: labels.enumerated().map { (String($0.offset), $0.element) })
    c["label2id"] = Dictionary(uniqueKeysWithValues: labels.enumerated().map { ($0.element, $0.offset) })
    c["problem_type"] = "single_label_classification"
    c["torch_dtype"] = "float32"
    c.removeValue(forKey: "_name_or_path")
    return c
  }
}
