import Foundation
import VKFCore
import VKFModel
import VKFPEFT

/// Writes a run's result into its output directory, beside metrics and checkpoints: the PEFT
/// adapter (LoRA, QLoRA) or a Hugging Face model directory (full fine-tuning). A reward model
/// (`scoreHead` set) is written as peft's SEQ_CLS adapter with the head in `modules_to_save`,
/// or as a `<Model>ForSequenceClassification` directory with `pad_token_id`.
///
/// The files are built in a hidden temporary directory inside `dir`, then each is renamed
/// into place, so a crash leaves the previous file or the new one, never half of one.
enum OutputWriter {
  static func write(lora: LoRAModel?, weights: DecoderWeights, model: LoadedModel, settings: TrainSettings,
                    into dir: URL, scoreHead: HFModelWriter.ScoreHead? = nil) throws {
    try staged(into: dir) { staging in
      if let lora {
        let recipe = (try? settings.rendered(as: "yaml")).map { "```yaml\n\($0)\n```" }
        try PEFTAdapterFiles.save(lora, baseModel: settings.model ?? "", to: staging, readme: recipe,
                                  scoreHead: scoreHead?.weight)
      } else {
        try HFModelWriter.write(weights: weights, model: model, to: staging, scoreHead: scoreHead)
      }
    }
  }

  /// Runs `body` on a staging directory inside `dir`, then moves each file it wrote into
  /// `dir` by rename (replacing same-named files; checkpoints and metrics stay).
  static func staged(into dir: URL, _ body: (URL) throws -> Void) throws {
    let fm = FileManager.default
    try fm.createDirectory(at: dir, withIntermediateDirectories: true)
    let staging = dir.appendingPathComponent(AtomicWrite.temporaryPrefix + "output-\(getpid())")
    try? fm.removeItem(at: staging)
    defer { try? fm.removeItem(at: staging) }
    try body(staging)
    for name in try fm.contentsOfDirectory(atPath: staging.path) {
      let from = staging.appendingPathComponent(name), to = dir.appendingPathComponent(name)
      guard rename(from.path, to.path) == 0 else {
        throw RecipeError("cannot move \(name) into \(dir.path): \(String(cString: strerror(errno)))")
      }
      CrashSeam.written(name)
    }
  }
}
