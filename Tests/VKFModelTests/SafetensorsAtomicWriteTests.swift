import Foundation
import XCTest
@testable import VKFModel

/// Writes are all-or-nothing and leave no temporary files behind.
final class SafetensorsAtomicWriteTests: XCTestCase {
  private var dir: SafetensorsTestDirectory!

  override func setUpWithError() throws { dir = try SafetensorsTestDirectory() }
  override func tearDown() { dir = nil }

  private struct Interrupted: Error {}

  private func writeOld() throws -> (URL, Data) {
    let url = dir.file("model.safetensors")
    try SafetensorsWriter.write(floats: ["old": ([1], [1])], to: url)
    return (url, try Data(contentsOf: url))
  }

  func test_success_replacesFileAndLeavesNoTemporary() throws {
    let (url, _) = try writeOld()
    try SafetensorsWriter.write(floats: ["new": ([2], [2, 3])], to: url)
    XCTAssertEqual(try SafetensorsFile(contentsOf: url).tensorNames, ["new"])
    XCTAssertEqual(try dir.contents(), ["model.safetensors"])
  }

  func test_readOnlyDirectory_failsClearlyAndKeepsOldFile() throws {
    let (url, old) = try writeOld()
    XCTAssertEqual(chmod(dir.url.path, 0o555), 0)
    defer { chmod(dir.url.path, 0o755) }
    if access(dir.url.path, W_OK) == 0 {
      throw XCTSkip("running as root: a read-only directory is still writable (see the other failure tests)")
    }
    XCTAssertThrowsError(try SafetensorsWriter.write(floats: ["new": ([1], [2])], to: url)) { error in
      XCTAssertTrue(error is ModelFileError)
      XCTAssertTrue("\(error)".contains("temporary file"), "\(error)")
      XCTAssertTrue("\(error)".contains("writable"), "\(error)")
    }
    XCTAssertEqual(try Data(contentsOf: url), old)
    XCTAssertEqual(try dir.contents(), ["model.safetensors"])
  }

  /// The root-proof variant of the read-only test: no one may create files in /proc.
  func test_unwritableDirectory_failsClearlyEvenForRoot() throws {
    guard FileManager.default.fileExists(atPath: "/proc/self") else { throw XCTSkip("no /proc here") }
    let url = URL(fileURLWithPath: "/proc/vkf-atomic-test.safetensors")
    XCTAssertThrowsError(try SafetensorsWriter.write(floats: ["x": ([1], [1])], to: url)) { error in
      XCTAssertTrue(error is ModelFileError)
      XCTAssertTrue("\(error)".contains("creating a temporary file in /proc"), "\(error)")
      XCTAssertTrue("\(error)".contains("writable"), "\(error)")
    }
  }

  func test_failureMidWrite_keepsOldFileAndRemovesTemporary() throws {
    let (url, old) = try writeOld()
    XCTAssertThrowsError(try AtomicWrite.write(to: url) { out in
      try out.write([1, 2, 3])
      throw Interrupted()
    }) { XCTAssertTrue($0 is Interrupted) }
    XCTAssertEqual(try Data(contentsOf: url), old)
    XCTAssertEqual(try dir.contents(), ["model.safetensors"])
  }

  func test_failedRename_keepsDestinationAndRemovesTemporary() throws {
    // A non-empty directory where the file should go: rename(2) fails even for root.
    let target = dir.file("occupied.safetensors")
    try FileManager.default.createDirectory(at: target, withIntermediateDirectories: false)
    try Data([7]).write(to: target.appendingPathComponent("keep"))
    XCTAssertThrowsError(try SafetensorsWriter.write(floats: ["x": ([1], [1])], to: target)) { error in
      XCTAssertTrue("\(error)".contains("renaming"), "\(error)")
      XCTAssertTrue("\(error)".contains("left unchanged"), "\(error)")
    }
    XCTAssertEqual(try dir.contents(), ["occupied.safetensors"])
    XCTAssertEqual(try Data(contentsOf: target.appendingPathComponent("keep")), Data([7]))
  }

  func test_missingDirectory_failsClearly() throws {
    let url = dir.file("no/such/dir/model.safetensors")
    XCTAssertThrowsError(try SafetensorsWriter.write(floats: ["x": ([1], [1])], to: url)) { error in
      XCTAssertTrue("\(error)".contains("No such file or directory"), "\(error)")
    }
    XCTAssertEqual(try dir.contents(), [])
  }
}
