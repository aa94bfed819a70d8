import ArgumentParser
import Foundation
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
    let (weights, lora) = try ModelWithAdapter.load(loaded, adapter: adapter, backend: backend)
    guard let lora else { return }
    try Merge.merge(lora)
    let written = try HFModelWriter.write(weights: weights, model: loaded, to: dest, overwrite: overwrite)
    print("merged \(lora.adapters.count) adapters into \(loaded.location.url.lastPathComponent); wrote "
      + (written.weightFiles + ["config.json"] + written.copiedFiles).joined(separator: ", ") + " to \(dest.path)")
  }
}
