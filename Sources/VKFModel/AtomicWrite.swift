import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Writes a file all-or-nothing: into a temporary file in the destination's directory,
/// then `rename(2)`d over the destination.
///
/// A failure at any point (the body throws, the disk fills, the directory is read-only)
/// leaves an existing destination untouched and removes the temporary file. The rename is
/// atomic on POSIX file systems, so readers see either the old file or the whole new one.
public enum AtomicWrite {
  /// Prefix of temporary files, so a crashed writer's leftovers are recognisable.
  public static let temporaryPrefix = ".vkf-tmp-"

  /// Sequential output to the temporary file, handed to the body of `write(to:_:)`.
  public struct Output {
    fileprivate let fd: Int32
    fileprivate let destination: String

    /// Appends `bytes` to the file.
    public func write(_ bytes: UnsafeRawBufferPointer) throws {
      guard var p = bytes.baseAddress else { return }
      var left = bytes.count
      while left > 0 {
        let n = systemWrite(fd, p, left)
        if n < 0 {
          if errno == EINTR { continue }
          throw AtomicWrite.failure(destination, "writing")
        }
        p += n
        left -= n
      }
    }

    /// Appends `bytes` to the file.
    public func write(_ bytes: [UInt8]) throws {
      try bytes.withUnsafeBytes { try write($0) }
    }
  }

  /// Runs `body` against a temporary file next to `url`, then renames it to `url`.
  public static func write(to url: URL, _ body: (Output) throws -> Void) throws {
    let destination = url.path
    let directory = url.deletingLastPathComponent().path
    let temp = directory + "/" + temporaryPrefix + url.lastPathComponent + "-"
      + String(getpid()) + "-" + String(UInt32.random(in: 0...UInt32.max), radix: 16)
    let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
    guard fd >= 0 else { throw failure(destination, "creating a temporary file in \(directory) for") }
    do {
      try body(Output(fd: fd, destination: destination))
      // fsync before rename: otherwise a crash can leave the new name pointing at an empty file.
      guard fsync(fd) == 0 else { throw failure(destination, "flushing") }
      guard close(fd) == 0 else {
        unlink(temp)
        throw failure(destination, "closing")
      }
    } catch {
      close(fd)
      unlink(temp)
      throw error
    }
    guard rename(temp, destination) == 0 else {
      let error = failure(destination, "renaming the temporary file onto")
      unlink(temp)
      throw error
    }
  }

  /// Writes `bytes` to `url` atomically.
  public static func write(_ bytes: [UInt8], to url: URL) throws {
    try write(to: url) { try $0.write(bytes) }
  }

  /// An error naming the path, the step, errno's text and what to check.
  fileprivate static func failure(_ path: String, _ step: String) -> ModelFileError {
    let reason = String(cString: strerror(errno))
    return ModelFileError(path, "failed \(step) the file: \(reason); check that the directory "
      + "exists, is writable and has free space (any existing file was left unchanged)")
  }
}

/// `write(2)`, reachable from inside `Output`, whose own `write` methods shadow it.
private func systemWrite(_ fd: Int32, _ p: UnsafeRawPointer, _ count: Int) -> Int {
  write(fd, p, count)
}
