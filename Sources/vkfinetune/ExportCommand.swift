import ArgumentParser
import Foundation
import VKFCore
import VKFModel
import VKFPEFT

/// `vkfinetune export`: a trained adapter in the llama.cpp ecosystem's format.
struct ExportCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "export",
    abstract: "Export a model (an adapter merged in) or a LoRA adapter as GGUF for llama.cpp, LM Studio and Ollama.",
    discussion: """
      --format gguf-lora writes the adapter as llama.cpp's convert_lora_to_gguf.py does \
      (general.type adapter, adapter.lora.alpha, <tensor>.weight.lora_a / .lora_b, q/k rows \
      permuted for llama-architecture bases); llama.cpp applies it to the base model's GGUF \
      (llama-cli -m base.gguf --lora adapter.gguf). --ollama also writes a Modelfile beside it \
      (FROM the base, ADAPTER the file, the chat template and stop tokens). --format gguf writes \
      the whole model, the adapter (if any) merged in, with --outtype f32, f16, bf16 or q8_0 (as \
      llama.cpp's convert_hf_to_gguf.py) or q4_0, q4_k_m, q5_k_m, q6_k (as llama-quantize: ggml's \
      reference quantisers and its per-tensor mix, e.g. q4_k_m keeps attn_v and ffn_down of some \
      layers at q6_k; rows that do not fill 256-value blocks fall back to q5_0/q5_1/q8_0). From a \
      GGUF base it keeps that file's hyper-parameters and tokenizer; from a Hugging Face llama \
      directory it writes them as the converter does (config.json, tokenizer.json with a \
      byte-level BPE, tokenizer_config.json, the chat template). Files are written atomically.
      """)

  @OptionGroup var backendOptions: BackendOptions

  @Option(help: "The adapter's base model: a Hugging Face directory, a .gguf file or org/name in the cache.")
  var model: String
  @Option(help: "PEFT adapter directory (a causal-LM LoRA from `vkfinetune train`, or PEFT's); optional for --format gguf.")
  var adapter: String?
  @Option(help: "gguf-lora (the adapter) or gguf (the whole model, the adapter merged in).")
  var format = "gguf-lora"
  @Option(help: "Tensor type: f32 (default, as llama.cpp's converter), f16 or bf16; --format gguf also q8_0, q4_0, q4_k_m, q5_k_m, q6_k.")
  var outtype = "f32"
  @Option(help: "The .gguf file to write.")
  var output: String
  @Flag(help: "Also write an Ollama Modelfile beside the output.")
  var ollama = false
  @Flag(help: "Replace an existing --output (and Modelfile).")
  var overwrite = false

  func run() throws {
    if format == "gguf" { return try exportModel() }
    guard format == "gguf-lora" else { throw RecipeError("--format must be gguf-lora or gguf, got \(format)") }
    guard let adapter else { throw RecipeError("--format gguf-lora needs --adapter") }
    let type: GGMLType
    switch outtype {
    case "f32": type = .f32
    case "f16": type = .f16
    case "bf16": type = .bf16
    default: throw RecipeError("--outtype must be f32, f16 or bf16 for a GGUF LoRA, got \(outtype)")
    }
    let (dest, modelfile) = try destinations()
    try Self.checkDirectory(adapter)
    let loaded = try ModelLoader.load(model)
    let architecture = try Self.architecture(loaded)
    let backend = try backendOptions.makeBackend()
    let weights = try DecoderWeights(from: loaded.weights, shape: loaded.shape, backend: backend, trainable: .none)
    let a = try PEFTAdapterFiles.loadAdapter(URL(fileURLWithPath: adapter), into: weights)
    guard a.scoreHead == nil else {
      throw RecipeError("\(adapter) is a reward-model (SEQ_CLS) adapter; llama.cpp's LoRA applies to causal LMs only")
    }
    let name = URL(fileURLWithPath: adapter).standardizedFileURL.lastPathComponent
    let settings = GGUFLoRAExport.Settings(architecture: architecture, name: name, heads: loaded.shape.heads,
                                           kvHeads: loaded.shape.kvHeads, type: type)
    try GGUFLoRAExport.write(a.lora, settings, to: dest.path)
    print("wrote \(dest.path): \(a.lora.parameterGroups.count) LoRA pairs (\(outtype)), architecture \(architecture), "
      + "alpha \(GGUFLoRAExport.alpha(a.lora.config)), rank \(a.lora.config.r)")
    if ollama {
      let text = Self.modelfile(base: loaded.location.url.path, adapter: dest.lastPathComponent, loaded: loaded)
      try AtomicWrite.write(Array(text.utf8), to: modelfile)
      print("wrote \(modelfile.path) (ollama create <name> -f \(modelfile.path))")
    }
  }

  /// `--format gguf`: the model loaded from a GGUF, the adapter merged in, written back.
  func exportModel() throws {
    guard let type = GGUFModelExport.OutType(rawValue: outtype) else {
      throw RecipeError("--outtype must be one of \(GGUFModelExport.OutType.allCases.map(\.rawValue).joined(separator: ", ")), got \(outtype)")
    }
    let (dest, modelfile) = try destinations()
    let loaded = try ModelLoader.load(model)
    let arch = try Self.architecture(loaded)
    // The metadata first: a tokenizer or RoPE the export cannot write stops before any work.
    let source: GGUFFile?, hf: GGUFHFMetadata.Result?
    var name: String
    switch loaded.location {
    case .gguf(let url):
      source = try GGUFFile(path: url.path)
      hf = nil
      name = source?.metadata["general.name"]?.string ?? url.deletingPathExtension().lastPathComponent
    case .huggingFaceDirectory(let url):
      source = nil
      hf = try GGUFHFMetadata.build(directory: url, architecture: arch, tokenizer: loaded.tokenizer)
      name = url.standardizedFileURL.lastPathComponent
    }
    let backend = try backendOptions.makeBackend()
    let weights = try DecoderWeights(from: loaded.weights, shape: loaded.shape, backend: backend, trainable: .none)
    if let adapter {
      try Self.checkDirectory(adapter)
      let a = try PEFTAdapterFiles.loadAdapter(URL(fileURLWithPath: adapter), into: weights)
      guard a.scoreHead == nil else {
        throw RecipeError("\(adapter) is a reward-model (SEQ_CLS) adapter; a GGUF causal LM cannot hold its head")
      }
      try Merge.merge(a.lora)
      name += " + " + URL(fileURLWithPath: adapter).standardizedFileURL.lastPathComponent
    }
    if let source {
      try GGUFModelExport.write(weights: weights, source: source, name: name, outtype: type, to: dest.path)
    } else if let hf {
      try GGUFModelExport.write(weights: weights, architecture: arch, metadata: hf.metadata, extraTensors: hf.extraTensors,
                                name: name, outtype: type, origin: loaded.location.url.path, to: dest.path)
    }
    let size = (try? FileManager.default.attributesOfItem(atPath: dest.path)[.size] as? Int) ?? 0
    print("wrote \(dest.path): \(outtype), \(String(format: "%.1f", Double(size) / 1_048_576)) MiB"
      + (adapter.map { ", adapter \($0) merged" } ?? ""))
    if ollama {
      let text = Self.modelfile(base: "./" + dest.lastPathComponent, adapter: nil, loaded: loaded)
      try AtomicWrite.write(Array(text.utf8), to: modelfile)
      print("wrote \(modelfile.path) (ollama create <name> -f \(modelfile.path))")
    }
  }

  /// The output file and the Modelfile beside it, refused when they exist without --overwrite.
  func destinations() throws -> (file: URL, modelfile: URL) {
    let dest = URL(fileURLWithPath: output).standardizedFileURL
    let modelfile = dest.deletingLastPathComponent().appendingPathComponent("Modelfile")
    for url in [dest] + (ollama ? [modelfile] : []) where FileManager.default.fileExists(atPath: url.path) && !overwrite {
      throw RecipeError("\(url.path) exists; pass --overwrite to replace it")
    }
    return (dest, modelfile)
  }

  /// Refuses an --adapter that is not a directory.
  static func checkDirectory(_ adapter: String) throws {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: adapter, isDirectory: &isDir), isDir.boolValue else {
      throw RecipeError("--adapter: no such directory \(adapter)")
    }
  }

  /// The base's GGUF architecture: the file's own, or the converter's for the config's model_type.
  static func architecture(_ loaded: LoadedModel) throws -> String {
    if loaded.location.url.pathExtension.lowercased() == "gguf" {
      let file = try GGUFFile(path: loaded.location.url.path)
      if case .string(let a)? = file.metadata["general.architecture"] { return a }
    }
    guard let type = loaded.config?.modelType, let arch = GGUFNameMap.ggufArchitecture(modelType: type) else {
      throw RecipeError("\(loaded.location.url.path): no llama.cpp architecture is known for this model")
    }
    return arch
  }

  /// An Ollama Modelfile: FROM the base (a GGUF, or a safetensors directory Ollama imports),
  /// ADAPTER the exported file, and for a ChatML chat template its Go TEMPLATE, default
  /// system prompt and stop tokens.
  static func modelfile(base: String, adapter: String?, loaded: LoadedModel) -> String {
    var lines = ["FROM \(base)"] + (adapter.map { ["ADAPTER ./\($0)"] } ?? [])
    let source = loaded.chatTemplate?.source ?? ""
    if source.contains("<|im_start|>") {
      // A default system prompt written into the template (SmolLM2's), as Ollama's SYSTEM.
      let pattern = #"<\|im_start\|>system(?:\\n|\n)([^<'"{}]+)<\|im_end\|>"#
      if let re = try? NSRegularExpression(pattern: pattern),
         let m = re.firstMatch(in: source, range: NSRange(source.startIndex..., in: source)),
         let r = Range(m.range(at: 1), in: source) {
        lines.append("SYSTEM \"\"\"\(source[r])\"\"\"")
      }
      lines.append("""
        TEMPLATE \"\"\"{{- if .System }}<|im_start|>system
        {{ .System }}<|im_end|>
        {{ end }}{{- range .Messages }}{{- if ne .Role "system" }}<|im_start|>{{ .Role }}
        {{ .Content }}<|im_end|>
        {{ end }}{{- end }}<|im_start|>assistant
        \"\"\"
        """)
      for stop in ["<|im_end|>", "<|im_start|>"] { lines.append("PARAMETER stop \"\(stop)\"") }
    }
    for id in loaded.eosTokenIDs {
      if let t = loaded.tokenizer.token(for: id), !lines.contains("PARAMETER stop \"\(t)\"") {
        lines.append("PARAMETER stop \"\(t)\"")
      }
    }
    return lines.joined(separator: "\n") + "\n"
  }
}
