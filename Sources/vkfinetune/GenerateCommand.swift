import ArgumentParser
import Foundation
import VKFCore
import VKFModel
import VKFTokenizer

/// `vkfinetune generate`: load a model, continue a prompt (optionally as a chat turn) and
/// stream the text to stdout; a one-line summary goes to stderr.
struct GenerateCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "generate",
    abstract: "Generate text from a prompt with a KV cache (greedy or sampled).",
    discussion: """
      The continuation streams to stdout as it is decoded; tokens, prefill and decode speed \
      go to stderr. Defaults match GenerationConfig: greedy (temperature 0), top-k and top-p \
      off. Generation stops at the model's EOS ids, a --stop string (left out of the \
      output), --max-new-tokens, or the end of the context.
      """)

  @OptionGroup var backendOptions: BackendOptions

  @Option(help: "Model directory (config.json + safetensors), .gguf file, or Hugging Face repo id.")
  var model: String

  @Option(help: "The prompt text (or --prompts).")
  var prompt: String?

  @Option(help: "JSONL of prompts to answer in batches: each line an object with a \"prompt\" string or a \"messages\" list; needs --output.")
  var prompts: String?

  @Option(help: "With --prompts: the JSONL to write, one line per answer: the record's fields plus completion, completion_tokens, stop_reason (and sample with --num-return-sequences > 1).")
  var output: String?

  @Option(help: "With --prompts: rows decoded together (prompts × samples per pass).")
  var batchSize = 16

  @Option(help: "With --prompts: answers sampled per prompt.")
  var numReturnSequences = 1

  @Option(help: "PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) to apply.")
  var adapter: String?

  @Flag(help: "Render the prompt as a user turn through the model's chat template, with the assistant prompt appended.")
  var chat = false

  @Option(help: "System message for --chat.")
  var system: String?

  @Option(help: "Built-in chat template for --chat when the model has none: \(ChatTemplate.builtinNames.joined(separator: ", ")).")
  var template: String?

  @Option(help: "The most tokens to generate (≥ 1).")
  var maxNewTokens = GenerationConfig().maxNewTokens

  @Option(help: "Sampling temperature (≥ 0; 0 = greedy).")
  var temperature = GenerationConfig().temperature

  @Option(help: "Keep only the k most likely tokens (≥ 0; 0 = off).")
  var topK = GenerationConfig().topK

  @Option(help: "Nucleus sampling: keep the most likely tokens up to this total probability (0 < p ≤ 1; 1 = off).")
  var topP = GenerationConfig().topP

  @Option(help: "Penalise tokens already in the prompt or output (> 0; 1 = off).")
  var repetitionPenalty = GenerationConfig().repetitionPenalty

  @Option(help: "Seed of the sampling RNG (same seed, same text).")
  var seed = GenerationConfig().seed

  @Option(help: "Stop when the output contains this text (repeatable); it is left out of the output.")
  var stop: [String] = []

  /// The flags as one `GenerationConfig`.
  var generationConfig: GenerationConfig {
    GenerationConfig(maxNewTokens: maxNewTokens, temperature: temperature, topK: topK, topP: topP,
                     repetitionPenalty: repetitionPenalty, seed: seed, stopStrings: stop)
  }

  func validate() throws {
    do { try generationConfig.validate() } catch { throw ValidationError("--\(error)") }
    if system != nil, !chat { throw ValidationError("--system needs --chat") }
    switch (prompt, prompts) {
    case (nil, nil): throw ValidationError("pass --prompt TEXT or --prompts FILE.jsonl")
    case (_?, _?): throw ValidationError("--prompt and --prompts exclude each other")
    case (_?, nil):
      if output != nil { throw ValidationError("--output needs --prompts (one --prompt streams to stdout)") }
    case (nil, _?):
      if output == nil { throw ValidationError("--prompts needs --output FILE.jsonl") }
      guard batchSize >= 1 else { throw ValidationError("--batch-size must be ≥ 1 (got \(batchSize))") }
      guard numReturnSequences >= 1 else {
        throw ValidationError("--num-return-sequences must be ≥ 1 (got \(numReturnSequences))")
      }
    }
    if let template, !ChatTemplate.builtinNames.contains(template.lowercased()) {
      throw ValidationError("--template must be one of \(ChatTemplate.builtinNames.joined(separator: ", ")) (got \(template))")
    }
  }

  func run() throws {
    if let prompts, let output { return try runBatched(prompts: prompts, output: output) }
    let loaded = try ModelLoader.load(model)
    let backend = try backendOptions.makeBackend()
    let tokenizer = loaded.tokenizer
    let promptIDs = try promptTokens(loaded, prompt ?? "")
    let (weights, lora) = try ModelWithAdapter.load(loaded, adapter: adapter, backend: backend)
    lora?.training = false  // no dropout when generating
    let llama = try DecoderModel(weights: weights)
    let config = generationConfig
    var capacity = promptIDs.count + config.maxNewTokens
    if let limit = loaded.config?.maxPositionEmbeddings, limit > promptIDs.count { capacity = min(capacity, limit) }
    let generator = TextGenerator(predictor: try CachedLlamaPredictor(model: llama, capacity: capacity),
                                  decoder: tokenizer, eosTokenIDs: loaded.eosTokenIDs)
    let result = try generator.generate(prompt: promptIDs, config: config) { piece in
      FileHandle.standardOutput.write(Data(piece.utf8))
    }
    FileHandle.standardOutput.write(Data("\n".utf8))
    let n = result.tokenIDs.count
    let decodeRate = n > 1 && result.decodeSeconds > 0 ? Double(n - 1) / result.decodeSeconds : 0
    let summary = String(format: "%d prompt + %d new tokens (%@), prefill %.2f s (%.0f tok/s), decode %.1f tok/s on %@\n",
                         result.promptTokens, n, describe(result.stopReason), result.prefillSeconds,
                         Double(result.promptTokens) / max(result.prefillSeconds, 1e-9), decodeRate, backend.name)
    FileHandle.standardError.write(Data(summary.utf8))
  }

  /// The prompt's ids: raw text with the tokenizer's special tokens (BOS), or the chat
  /// template's rendering, whose special tokens are already in the text.
  func promptTokens(_ loaded: LoadedModel, _ prompt: String) throws -> [Int] {
    let tok = loaded.tokenizer
    guard chat else { return tok.encode(prompt, addSpecialTokens: true) }
    var messages: [ChatMessage] = []
    if let system { messages.append(ChatMessage(role: "system", content: system)) }
    messages.append(ChatMessage(role: "user", content: prompt))
    return try chatTokens(loaded, messages)
  }

  /// `messages` rendered through the chat template with the assistant prompt appended.
  func chatTokens(_ loaded: LoadedModel, _ messages: [ChatMessage]) throws -> [Int] {
    let tok = loaded.tokenizer
    let chatTemplate: ChatTemplate
    if let name = template {
      chatTemplate = try ChatTemplate.builtin(name)
    } else if let t = loaded.chatTemplate {
      chatTemplate = t
    } else {
      throw ValidationError("--chat: \(model) has no chat template; pass --template with one of "
        + ChatTemplate.builtinNames.joined(separator: ", "))
    }
    let text = try chatTemplate.render(messages: messages, addGenerationPrompt: true,
                                   bosToken: loaded.bosTokenID.flatMap { tok.token(for: $0) } ?? "",
                                   eosToken: loaded.eosTokenIDs.first.flatMap { tok.token(for: $0) } ?? "")
    return tok.encode(text, addSpecialTokens: false)
  }

  func describe(_ r: StopReason) -> String {
    switch r {
    case .eos(let id): return "EOS \(id)"
    case .stopString(let s): return "stop string \(s.debugDescription)"
    case .maxTokens: return "max tokens"
    case .contextFull: return "context full"
    }
  }
}
