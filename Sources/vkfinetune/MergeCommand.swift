import ArgumentParser
import Foundation
import VKFCore
import VKFModel
import VKFPEFT

/// `vkfinetune merge`: fold a PEFT adapter into its base model and write a Hugging Face model
/// directory (f32 safetensors, config.json, tokenizer files).
struct MergeCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "merge",
    abstract: "Merge a LoRA adapter into its base model and write a Hugging Face model directory.",
    discussion: """
      W' = W + s·B·A in every adapted projection (DoRA: rescaled by its magnitude), as peft's \
      merge_and_unload. The base is loaded in f32 (a GGUF base is dequantised), so a QLoRA \
      adapter merges into the full-precision weights. The directory is written atomically.
      """)

  @OptionGroup var backendOptions: BackendOptions

  @Option(help: "Base model: a Hugging Face directory, a .gguf file, or org/name in the Hugging Face cache.")
  var model: String

  @Option(help: "PEFT adapter directory.")
  var adapter: String

  @Option(help: "Output directory for the merged model.")
  var output: String

  @Flag(help: "Replace a non-empty --output.")
  var overwrite = false

  func run() throws {
    let dest = URL(fileURLWithPath: output).standardizedFileURL
    try TrainSettings.checkOutput(dest.path, mode: overwrite ? .overwrite : .refuseExisting)
    let loaded = try ModelLoader.load(model)
    let backend = try backendOptions.makeBackend()
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: adapter, isDirectory: &isDir), isDir.boolValue else {
      throw RecipeError("--adapter: no such directory \(adapter)")
    }
    let weights = try DecoderWeights(from: loaded.weights, shape: loaded.shape, backend: backend, trainable: .none)
    // A reward (SEQ_CLS) adapter merges into a reward model directory: its head replaces the LM head.
    let a = try PEFTAdapterFiles.loadAdapter(URL(fileURLWithPath: adapter), into: weights)
    let lora = a.lora
    let scoreHead = try a.scoreHead.map {
      HFModelWriter.ScoreHead(weight: try backend.tensor($0, shape: [1, loaded.shape.hidden]),
                              padTokenID: TrainData.padID(objective: .reward, model: loaded))
    }
    try Merge.merge(lora)
    let written = try HFModelWriter.write(weights: weights, model: loaded, to: dest, overwrite: overwrite,
                                          scoreHead: scoreHead)
    let experts = lora.expertGroups.isEmpty ? "" : " and \(lora.expertGroups.count) expert adapters"
    print("merged \(lora.parameterGroups.count) adapters\(experts) into \(loaded.location.url.lastPathComponent)"
      + (scoreHead == nil ? "" : " (a reward model: score head, pad_token_id \(scoreHead?.padTokenID ?? 0))") + "; wrote "
      + (written.weightFiles + ["config.json"] + written.copiedFiles).joined(separator: ", ") + " to \(dest.path)")
  }
}
