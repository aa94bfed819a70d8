// Reads JSON-array or JSONL files into untyped records.
import Foundation

/// One dataset record as parsed from JSON: key order is irrelevant.
public typealias DatasetRecord = [String: Any]

/// Records read from one file, with how many bad ones were skipped.
public struct LoadedRecords {
  /// The file the records came from (for error messages).
  public var file: String
  /// The parsed records, in file order.
  public var records: [DatasetRecord]
  /// Malformed or non-object records skipped because `skipBadRecords` was set.
  public var skippedRecords: Int
}

/// Loads dataset files; the container (JSON array vs JSONL) is detected from the content.
public enum DatasetLoader {
  /// Reads `url`: a JSON array when the first non-blank character is `[`, else JSONL. A file
  /// whose records would not fit in this machine's memory is refused before it is read
  /// (`DatasetLimits`).
  public static func load(_ url: URL, skipBadRecords: Bool = false) throws -> LoadedRecords {
    var info = stat()
    if stat(url.path, &info) == 0 {
      try DatasetLimits.checkFits(fileBytes: Int(info.st_size), file: url.lastPathComponent,
                                  physicalMemory: ProcessInfo.processInfo.physicalMemory)
    }
    let data: Data
    do {
      data = try Data(contentsOf: url)
    } catch {
      throw DatasetError.unreadable(file: url.path, reason: error.localizedDescription)
    }
    return try parse(data, file: url.lastPathComponent, skipBadRecords: skipBadRecords)
  }

  /// Parses in-memory bytes; `file` names the source in errors.
  public static func parse(_ data: Data, file: String, skipBadRecords: Bool = false) throws -> LoadedRecords {
    let first = data.first { !isBlank($0) }
    guard let first else { throw DatasetError.empty(file: file) }
    let result: LoadedRecords
    if first == UInt8(ascii: "[") {
      result = try parseArray(data, file: file, skipBadRecords: skipBadRecords)
    } else {
      result = try parseLines(data, file: file, skipBadRecords: skipBadRecords)
    }
    if result.records.isEmpty { throw DatasetError.empty(file: file) }
    return result
  }

  private static func isBlank(_ b: UInt8) -> Bool {
    b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 || b == 0xEF || b == 0xBB || b == 0xBF  // BOM bytes too
  }

  private static func parseArray(_ data: Data, file: String, skipBadRecords: Bool) throws -> LoadedRecords {
    let parsed: Any
    do {
      parsed = try JSONSerialization.jsonObject(with: data)
    } catch {
      throw DatasetError.malformedJSON(file: file, line: nil, problem: oneLine(error))
    }
    guard let array = parsed as? [Any] else {
      throw DatasetError.malformedJSON(file: file, line: nil, problem: "top level is not an array")
    }
    var records: [DatasetRecord] = []
    var skipped = 0
    for (i, element) in array.enumerated() {
      if let object = element as? DatasetRecord {
        records.append(object)
      } else if skipBadRecords {
        skipped += 1
      } else {
        throw DatasetError.notAnObject(file: file, record: i)
      }
    }
    return LoadedRecords(file: file, records: records, skippedRecords: skipped)
  }

  private static func parseLines(_ bytes: Data, file: String, skipBadRecords: Bool) throws -> LoadedRecords {
    var records: [DatasetRecord] = []
    var skipped = 0
    var lineNumber = 0
    for line in bytes.split(separator: 0x0A, omittingEmptySubsequences: false) {
      lineNumber += 1
      // Not skippable: a record this size is a broken file (or an attack), not a bad line.
      if line.count > DatasetLimits.maxRecordBytes {
        throw DatasetError.tooLarge(file: file, problem: "line \(lineNumber) is a record of "
          + DatasetLimits.size(line.count) + ", over the " + DatasetLimits.size(DatasetLimits.maxRecordBytes)
          + " one record may be (no training row holds more than max_seq_length tokens); split or drop it")
      }
      guard line.contains(where: { !isBlank($0) }) else { continue }
      do {
        let parsed = try JSONSerialization.jsonObject(with: Data(line), options: [.fragmentsAllowed])
        guard let object = parsed as? DatasetRecord else {
          throw DatasetError.malformedJSON(file: file, line: lineNumber, problem: "the line is not a JSON object")
        }
        records.append(object)
      } catch {
        if skipBadRecords {
          skipped += 1
          continue
        }
        if let datasetError = error as? DatasetError { throw datasetError }
        throw DatasetError.malformedJSON(file: file, line: lineNumber, problem: oneLine(error))
      }
    }
    return LoadedRecords(file: file, records: records, skippedRecords: skipped)
  }

  /// Foundation's parse errors span several lines on some platforms; keep the messages one line.
  private static func oneLine(_ error: Error) -> String {
    let nsError = error as NSError
    let text = (nsError.userInfo[NSDebugDescriptionErrorKey] as? String) ?? nsError.localizedDescription
    return text.split(whereSeparator: \.isNewline).joined(separator: " ")
  }
}
