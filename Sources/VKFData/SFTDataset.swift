// The pipeline in one call: file → records → examples → tokens, with counts for the log.
import Foundation

/// A loaded and tokenized SFT dataset with what the pipeline skipped, cut or simplified.
public struct SFTDataset {
  /// Tokenized examples, in file order.
  public var examples: [TokenizedExample]
  /// Bad records skipped under `skipBadRecords`.
  public var skippedRecords: Int
  /// Truncation and last-turn-only counts.
  public var stats: RenderStats

  /// Loads `url` and tokenizes every record with `tokenizer` (its config decides format and masking).
  public static func load(_ url: URL, tokenizer: SFTTokenizer) throws -> SFTDataset {
    let loaded = try DatasetLoader.load(url, skipBadRecords: tokenizer.config.skipBadRecords)
    return try build(loaded, tokenizer: tokenizer)
  }

  /// Normalises and tokenizes already-loaded records.
  public static func build(_ loaded: LoadedRecords, tokenizer: SFTTokenizer) throws -> SFTDataset {
    var stats = RenderStats()
    var examples: [TokenizedExample] = []
    examples.reserveCapacity(loaded.records.count)
    for (i, record) in loaded.records.enumerated() {
      let example = try DatasetFormat.normalise(record, format: tokenizer.config.format, file: loaded.file, index: i)
      do {
        examples.append(try tokenizer.tokenize(example, index: i, stats: &stats))
      } catch let error as DatasetError {
        throw error.naming(file: loaded.file)
      }
    }
    return SFTDataset(examples: examples, skippedRecords: loaded.skippedRecords, stats: stats)
  }
}
