import Foundation
import XCTest
@testable import VKFData

/// Dataset files too large to read are refused before reading, naming the file, the sizes and
/// what to do; a single oversized JSONL record names its line.
final class DatasetLimitsTests: XCTestCase {
  private var dir: URL!

  override func setUpWithError() throws {
    dir = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-data-limits-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

  func test_fileThatWouldNotFitInMemory_refusedWithSizes() throws {
    // 16 bytes of memory per byte of file: 1 GiB needs 16 GiB.
    XCTAssertNoThrow(try DatasetLimits.checkFits(fileBytes: 1 << 30, file: "d.jsonl", physicalMemory: 16 << 30))
    XCTAssertThrowsError(try DatasetLimits.checkFits(fileBytes: (1 << 30) + 1, file: "d.jsonl", physicalMemory: 16 << 30)) {
      XCTAssertEqual("\($0)", "d.jsonl: the file is 1.0 GiB; reading and tokenising it takes about 16.0 GiB "
        + "(16 bytes per byte of records), more than this machine's 16.0 GiB of memory: split it, or train on a part of it")
    }
    XCTAssertThrowsError(try DatasetLimits.checkFits(fileBytes: Int.max, file: "d.jsonl", physicalMemory: .max))
    // Through the loader: a sparse 1 TiB file is refused by its size, not read.
    let sparse = dir.appendingPathComponent("huge.jsonl")
    FileManager.default.createFile(atPath: sparse.path, contents: nil)
    let handle = try FileHandle(forWritingTo: sparse)
    try handle.truncate(atOffset: 1 << 40)
    try handle.close()
    XCTAssertThrowsError(try DatasetLoader.load(sparse)) { error in
      XCTAssertTrue("\(error)".hasPrefix("huge.jsonl: the file is 1024.0 GiB; reading and tokenising it"), "\(error)")
    }
  }

  func test_oversizedJSONLRecord_refusedNamingItsLine() throws {
    var text = Data(#"{"text": "short"}"#.utf8 + [0x0A])
    text.append(Data(#"{"text": ""#.utf8))
    text.append(Data(repeating: UInt8(ascii: "a"), count: DatasetLimits.maxRecordBytes))
    text.append(Data(#""}"#.utf8 + [0x0A]))
    let url = dir.appendingPathComponent("long.jsonl")
    try text.write(to: url)
    for skip in [false, true] {
      XCTAssertThrowsError(try DatasetLoader.load(url, skipBadRecords: skip)) { error in
        XCTAssertEqual(error as? DatasetError, .tooLarge(file: "long.jsonl", problem: "line 2 is a record of 64.0 MiB, "
          + "over the 64.0 MiB one record may be (no training row holds more than max_seq_length tokens); split or drop it"))
      }
    }
    // One byte under the cap still reads.
    let fits = Data(#"{"text": ""#.utf8) + Data(repeating: UInt8(ascii: "a"), count: DatasetLimits.maxRecordBytes - 13)
      + Data(#""}"#.utf8)
    XCTAssertEqual(fits.count, DatasetLimits.maxRecordBytes - 1)
    XCTAssertEqual(try DatasetLoader.parse(fits, file: "fits.jsonl").records.count, 1)
  }
}
