import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A safetensors checkpoint that can hand out raw tensor bytes as well as f32 values.
public protocol SafetensorsSource: WeightSource {
  /// The file's `__metadata__` (for a sharded checkpoint, the index's string metadata).
  var metadata: [String: String] { get }
  /// The header entry of one tensor.
  func info(of name: String) throws -> SafetensorsTensorInfo
  /// The tensor's bytes inside the memory map, valid while this source is alive.
  func rawTensor(_ name: String) throws -> SafetensorsRawTensor
}

/// One memory-mapped `.safetensors` file, with its header validated on open.
///
/// Layout (REFERENCE.md, Safetensors): an 8-byte little-endian header length N, N bytes of
/// JSON `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {…}}`, then the
/// data section, to which the offsets are relative. The map is read-only and never
/// changes after `init`, so the object is safe to share between threads.
public final class SafetensorsFile: SafetensorsSource, @unchecked Sendable {
  /// Where the file is.
  /// The file's path (`WeightSource`).
  public var weightsPath: String { url.path }
  public let url: URL
  /// The `__metadata__` map (empty when the file has none).
  public let metadata: [String: String]
  /// Every tensor name, sorted.
  public let tensorNames: [String]
  /// The file's size in bytes.
  public let fileSize: Int

  private let tensors: [String: SafetensorsTensorInfo]
  private let map: UnsafeRawPointer
  private let dataStart: Int

  /// Bytes of the little-endian header-length prefix.
  static let lengthPrefixBytes = 8

  /// Opens and maps `url`, validating the whole header before returning.
  public init(contentsOf url: URL) throws {
    let path = url.path
    self.url = url
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
      throw ModelFileError(path, "cannot open safetensors file: \(String(cString: strerror(errno))); "
        + "check the path and its permissions")
    }
    defer { close(fd) }
    var st = stat()
    guard fstat(fd, &st) == 0 else {
      throw ModelFileError(path, "cannot stat safetensors file: \(String(cString: strerror(errno)))")
    }
    guard (st.st_mode & S_IFMT) == S_IFREG else {
      throw ModelFileError(path, "is not a regular file; pass a .safetensors file")
    }
    let size = Int(st.st_size)
    guard size >= Self.lengthPrefixBytes else {
      throw ModelFileError(path, "file is \(size) bytes, shorter than the 8-byte safetensors header "
        + "length; the file is truncated or not a safetensors file")
    }
    guard let mapped = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), mapped != MAP_FAILED else {
      throw ModelFileError(path, "cannot memory-map \(size) bytes: \(String(cString: strerror(errno)))")
    }
    let base = UnsafeRawPointer(mapped)
    // From here on every failure must unmap before throwing (deinit does not run).
    do {
      let n = UInt64(littleEndian: base.loadUnaligned(as: UInt64.self))
      guard n <= UInt64(SafetensorsHeader.maxHeaderBytes) else {
        throw ModelFileError(path, "header length \(n) exceeds the 100 MB limit; the file is corrupt "
          + "or not a safetensors file")
      }
      let headerBytes = Int(n)
      guard headerBytes <= size - Self.lengthPrefixBytes else {
        throw ModelFileError(path, "header length \(headerBytes) runs past the end of the file "
          + "(\(size) bytes); the file is truncated or not a safetensors file")
      }
      let start = Self.lengthPrefixBytes + headerBytes
      let header = try SafetensorsHeader.parse(
        json: UnsafeRawBufferPointer(start: base + Self.lengthPrefixBytes, count: headerBytes),
        dataSize: size - start, path: path)
      self.tensors = header.tensors
      self.metadata = header.metadata
      self.tensorNames = header.tensors.keys.sorted()
      self.dataStart = start
    } catch {
      munmap(mapped, size)
      throw error
    }
    self.map = base
    self.fileSize = size
  }

  /// Opens and maps the file at `path`.
  public convenience init(path: String) throws {
    try self.init(contentsOf: URL(fileURLWithPath: path))
  }

  deinit {
    munmap(UnsafeMutableRawPointer(mutating: map), fileSize)
  }

  // MARK: - Lookup

  /// The header entry of `name`, or an error naming the file and the tensor.
  public func info(of name: String) throws -> SafetensorsTensorInfo {
    guard let info = tensors[name] else {
      throw ModelFileError(url.path, "no tensor named \"\(name)\" (the file holds \(tensors.count) "
        + "tensors); check the checkpoint matches the model")
    }
    return info
  }

  /// Whether the file holds a tensor called `name`.
  public func contains(_ name: String) -> Bool { tensors[name] != nil }

  /// The tensor's bytes inside the map (no copy). Valid while this object is alive; use
  /// `withRawTensor` where the object's lifetime is not otherwise guaranteed.
  public func rawTensor(_ name: String) throws -> SafetensorsRawTensor {
    let info = try info(of: name)
    let bytes = UnsafeRawBufferPointer(start: map + dataStart + info.dataOffsets.lowerBound,
                                       count: info.dataOffsets.count)
    return SafetensorsRawTensor(name: name, dtype: info.dtype, shape: info.shape, bytes: bytes)
  }

  /// Calls `body` with the tensor's bytes, keeping the map alive for the duration.
  public func withRawTensor<R>(_ name: String, _ body: (SafetensorsRawTensor) throws -> R) throws -> R {
    try withExtendedLifetime(self) { try body(rawTensor(name)) }
  }

  // MARK: - WeightSource

  /// The tensor's shape as stored (safetensors checkpoints are already in HF layout).
  public func shape(of name: String) throws -> [Int] { try info(of: name).shape }

  /// The stored dtype's header spelling ("F32", "BF16", …).
  public func storedType(of name: String) throws -> String { try info(of: name).dtype.rawValue }

  /// The tensor as row-major f32: F32 copied, F16/BF16/F64 and integer types converted.
  /// FP8 types throw (no Llama checkpoint we load stores them).
  public func floats(_ name: String) throws -> [Float] {
    try withRawTensor(name) { raw in
      guard raw.dtype.convertsToFloat else {
        throw ModelFileError(url.path, "tensor \"\(name)\" is \(raw.dtype.rawValue), which cannot be "
          + "converted to f32 here; convert the checkpoint to BF16, F16 or F32")
      }
      let count = raw.bytes.count / raw.dtype.itemSize
      return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
        if let dest = buffer.baseAddress, let source = raw.bytes.baseAddress {
          raw.dtype.convert(source, count: count, into: dest)
        }
        initialized = count
      }
    }
  }
}
