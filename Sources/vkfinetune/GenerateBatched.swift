import ArgumentParser
import Foundation
import VKFCore
import VKFModel
import VKFTokenizer

/// One prompt of a `--prompts` file: its line, its fields (written back with the answers)
/// and its token ids.
struct PromptRecord {
  var line: Int
  var fields: [String: Any]
  var ids: [Int]
}

extension GenerateCommand {
  /// `generate --prompts F --output O`: every prompt × --num-return-sequences answered by the
  /// batched engine, --batch-size rows per pass, prompts of similar length together (less
  /// padding); the answers are written all-or-nothing, in the file's order.
  func runBatched(prompts path: String, output: String) throws {
    let out = URL(fileURLWithPath: output)
    let dir = out.deletingLastPathComponent()
    var isDirectory: ObjCBool = false
    guard FileManager.default.fileExists(atPath: dir.path, isDirectory: &isDirectory), isDirectory.boolValue else {
      throw RecipeError("--output \(output): no such directory \(dir.path)")
    }
    guard FileManager.default.isWritableFile(atPath: dir.path) else {
      throw RecipeError("--output \(output): the directory \(dir.path) is not writable")
    }
    let loaded = try ModelLoader.load(model)
    let limit = loaded.config?.maxPositionEmbeddings ?? .max
    let records = try readPrompts(path, loaded, contextLimit: limit)
    let backend = try backendOptions.makeBackend()
    let (weights, lora) = try ModelWithAdapter.load(loaded, adapter: adapter, backend: backend)
    lora?.training = false
    let generator = BatchGenerator(model: try DecoderModel(weights: weights), decoder: loaded.tokenizer,
                                   eosTokenIDs: loaded.eosTokenIDs, contextLimit: limit)
    // Rows (record, sample), shortest prompts first; batches of --batch-size rows.
    let g = numReturnSequences
    let order = records.indices.sorted { (records[$0].ids.count, $0) < (records[$1].ids.count, $1) }
    let rows = order.flatMap { r in (0..<g).map { (record: r, sample: $0) } }
    let longest = records.map(\.ids.count).max() ?? 0
    try generator.reserve(rows: min(batchSize, rows.count), capacity: longest + maxNewTokens)
    var answers = [[BatchCompletion?]](repeating: [BatchCompletion?](repeating: nil, count: g), count: records.count)
    var generated = 0, seconds = 0.0
    let batches = (rows.count + batchSize - 1) / batchSize
    for b in 0..<batches {
      let slice = rows[(b * batchSize)..<min((b + 1) * batchSize, rows.count)]
      var config = generationConfig
      config.seed = config.seed &+ UInt64(b) &* 0x9E37_79B9_7F4A_7C15  // each batch its own draws
      let done = try generator.generate(prompts: slice.map { records[$0.record].ids }, config: config)
      for (row, answer) in zip(slice, done) { answers[row.record][row.sample] = answer }
      let s = generator.statistics
      generated += s.generatedTokens
      seconds += s.prefillSeconds + s.decodeSeconds
      let line = String(format: "batch %d/%d: %d rows, %d prompt + %d new tokens, %.1f s (%.0f new tok/s)\n",
                        b + 1, batches, s.rows, s.promptTokens, s.generatedTokens, s.prefillSeconds + s.decodeSeconds,
                        Double(s.generatedTokens) / max(s.prefillSeconds + s.decodeSeconds, 1e-9))
      FileHandle.standardError.write(Data(line.utf8))
    }
    try AtomicWrite.write(to: out) { file in
      for (r, record) in records.enumerated() {
        for (sample, answer) in answers[r].enumerated() {
          guard let answer else { continue }
          var fields = record.fields
          fields["completion"] = answer.text
          fields["completion_tokens"] = answer.tokenIDs.count
          fields["stop_reason"] = stopReasonName(answer.stopReason)
          if g > 1 { fields["sample"] = sample }
          let data = try JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys, .withoutEscapingSlashes])
          try file.write(Array(data) + [0x0A])
        }
      }
    }
    let summary = String(format: "%d prompts × %d: %d new tokens in %.1f s (%.1f tok/s) on %@ → %@\n",
                         records.count, g, generated, seconds, Double(generated) / max(seconds, 1e-9), backend.name, output)
    FileHandle.standardError.write(Data(summary.utf8))
  }

  /// The `stop_reason` value written for a stop.
  func stopReasonName(_ r: StopReason) -> String {
    switch r {
    case .eos: return "eos"
    case .stopString: return "stop_string"
    case .maxTokens: return "max_tokens"
    case .contextFull: return "context_full"
    }
  }

  /// The records of a prompts file, each tokenized; errors name the file and line.
  func readPrompts(_ path: String, _ loaded: LoadedModel, contextLimit: Int) throws -> [PromptRecord] {
    try PromptFile.read(path, flag: "--prompts").map { r in
      let ids: [Int]
      switch r.prompt {
      case .text(let text): ids = try promptTokens(loaded, text)
      case .messages(let m): ids = try chatTokens(loaded, m)
      }
      let at = "\(path) line \(r.line)"
      guard !ids.isEmpty else { throw RecipeError("\(at): the prompt is empty (no tokens)") }
      guard ids.count < contextLimit else {
        throw RecipeError("\(at): the prompt has \(ids.count) tokens; the model's context holds \(contextLimit)")
      }
      return PromptRecord(line: r.line, fields: r.fields, ids: ids)
    }
  }
}
