// Size caps of dataset files, checked before reading.
import Foundation

/// How large a dataset file, and one record in it, may be. Records are parsed whole in memory
/// (Foundation objects, then rendered text and token ids), so a file is refused up front when
/// reading it would take more than the machine's memory, instead of being killed minutes in.
public enum DatasetLimits {
  /// Peak resident bytes per byte of a dataset file while it is parsed, rendered and tokenised.
  /// Measured on a 100 MiB JSONL of alpaca records (249k records, release build): +0.86 GiB of
  /// peak RSS over a 1 MiB file at max_seq_length 64, +1.35 GiB at 4096 (13.8 bytes per file
  /// byte); rounded up for other shapes of text.
  public static let memoryPerFileByte = 16
  /// One JSONL line: the longest rows trained today (128k tokens) are under 1 MiB of text, so
  /// a 64 MiB record is a broken file or an attack, never data.
  public static let maxRecordBytes = 64 << 20

  /// Refuses a file of `fileBytes` whose records would need more than `physicalMemory`.
  public static func checkFits(fileBytes: Int, file: String, physicalMemory: UInt64) throws {
    let (needed, overflow) = fileBytes.multipliedReportingOverflow(by: memoryPerFileByte)
    guard overflow || UInt64(needed) > physicalMemory else { return }
    throw DatasetError.tooLarge(file: file, problem: "the file is \(size(fileBytes)); reading and tokenising it "
      + "takes about \(overflow ? "more than " + size(Int.max) : size(needed)) (\(memoryPerFileByte) bytes per byte of "
      + "records), more than this machine's \(size(Int(clamping: physicalMemory))) of memory: split it, or train on a part of it")
  }

  /// Bytes as KiB, MiB or GiB with one decimal.
  static func size(_ bytes: Int) -> String {
    let b = Double(bytes)
    if bytes >= 1 << 30 { return String(format: "%.1f GiB", b / Double(1 << 30)) }
    if bytes >= 1 << 20 { return String(format: "%.1f MiB", b / Double(1 << 20)) }
    return String(format: "%.1f KiB", b / 1024)
  }
}
