#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// One tensor's entry in a GGUF file's tensor-info table, as stored (GGUF order, not HF).
public struct GGUFTensorInfo: Sendable, Equatable {
  /// The llama.cpp tensor name ("blk.0.attn_q.weight").
  public var name: String
  /// Dimensions innermost-first, as GGUF stores them: `dimensions[0]` is the row length
  /// (ggml `ne[0]`). The Hugging Face shape is the reverse.
  public var dimensions: [Int]
  /// The stored element type.
  public var type: GGMLType
  /// Byte offset of the data from the start of the file's (aligned) data section.
  public var offset: Int
  /// Bytes of stored data.
  public var byteCount: Int

  /// Number of elements (product of the dimensions).
  public var elementCount: Int { dimensions.reduce(1, *) }
  /// The shape outermost-first (Hugging Face / PyTorch order).
  public var reversedShape: [Int] { dimensions.reversed() }
}

/// A memory-mapped, read-only GGUF file (llama.cpp format, versions 2 and 3, little-endian):
/// header, typed metadata and the tensor-info table, with bounds-checked access to each
/// tensor's raw bytes. Parsing never traps: every inconsistency is a `ModelFileError`.
///
/// Layout (gguf.h): magic "GGUF", u32 version, u64 tensor count, u64 metadata count,
/// metadata KVs, tensor infos (name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset),
/// padding to `general.alignment`, then the data section.
public final class GGUFFile {
  /// The file's path, used in every error.
  public let path: String
  /// The format version (2 or 3; they share a layout).
  public let version: UInt32
  /// All metadata by key.
  public let metadata: [String: GGUFValue]
  /// Metadata keys in file order.
  public let metadataKeys: [String]
  /// Tensor infos in file order.
  public let tensors: [GGUFTensorInfo]
  /// Data alignment in bytes (`general.alignment`, default 32).
  public let alignment: Int
  /// Absolute byte offset of the data section.
  public let dataOffset: Int

  private let base: UnsafeMutableRawPointer?
  private let mappedLength: Int
  /// True when `base` came from `mmap` (unmapped in deinit), false when allocated.
  private let isMapped: Bool
  private let tensorIndex: [String: Int]

  /// The ASCII magic "GGUF" read as a little-endian u32.
  static let magic: UInt32 = 0x4655_4747
  /// Alignment used when `general.alignment` is absent (gguf.h `GGUF_DEFAULT_ALIGNMENT`).
  public static let defaultAlignment = 32
  /// ggml's `GGML_MAX_DIMS`.
  static let maxDimensions = 4
  /// Versions whose layout this reader understands (v1 used 32-bit counts and is rejected).
  static let supportedVersions: ClosedRange<UInt32> = 2 ... 3

  /// Maps and parses the file at `path`.
  public init(path: String) throws(ModelFileError) {
    self.path = path
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else {
      throw ModelFileError(path, "cannot open GGUF file (errno \(errno)); check the path and permissions")
    }
    defer { close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0 else { throw ModelFileError(path, "cannot stat GGUF file (errno \(errno))") }
    let size = Int(info.st_size)
    var mapped: UnsafeMutableRawPointer?
    if size > 0 {
      guard let pointer = mmap(nil, size, PROT_READ, MAP_PRIVATE, fd, 0), pointer != MAP_FAILED else {
        throw ModelFileError(path, "cannot memory-map GGUF file (errno \(errno))")
      }
      mapped = pointer
    }
    let header: Header
    do {
      header = try GGUFFile.parse(UnsafeRawBufferPointer(start: mapped, count: size), path: path)
    } catch {
      if let mapped { munmap(mapped, size) }
      throw error
    }
    (base, mappedLength, isMapped) = (mapped, size, true)
    (version, metadata, metadataKeys, tensors) = (header.version, header.metadata, header.metadataKeys, header.tensors)
    (alignment, dataOffset, tensorIndex) = (header.alignment, header.dataOffset, header.tensorIndex)
  }

  /// Parses GGUF bytes held in memory (copied); `path` only names them in errors.
  public init(bytes: [UInt8], path: String) throws(ModelFileError) {
    self.path = path
    let copy = bytes.isEmpty ? nil : UnsafeMutableRawPointer.allocate(byteCount: bytes.count, alignment: 64)
    bytes.withUnsafeBytes { UnsafeMutableRawBufferPointer(start: copy, count: bytes.count).copyMemory(from: $0) }
    let header: Header
    do {
      header = try GGUFFile.parse(UnsafeRawBufferPointer(start: copy, count: bytes.count), path: path)
    } catch {
      copy?.deallocate()
      throw error
    }
    (base, mappedLength, isMapped) = (copy, bytes.count, false)
    (version, metadata, metadataKeys, tensors) = (header.version, header.metadata, header.metadataKeys, header.tensors)
    (alignment, dataOffset, tensorIndex) = (header.alignment, header.dataOffset, header.tensorIndex)
  }

  deinit {
    guard let base else { return }
    if isMapped { munmap(base, mappedLength) } else { base.deallocate() }
  }

  /// Size of the file in bytes.
  public var fileSize: Int { mappedLength }

  /// `general.architecture` ("llama", "qwen2", …), if present.
  public var architecture: String? { metadata["general.architecture"]?.string }

  /// The tensor info for a GGUF tensor name.
  public func tensor(named name: String) -> GGUFTensorInfo? {
    tensorIndex[name].map { tensors[$0] }
  }

  /// Calls `body` with the tensor's stored bytes (valid only inside the call: the mapping
  /// lives as long as this object). Bounds were checked when the file was opened.
  public func withRawBytes<R, E: Error>(
    of tensor: GGUFTensorInfo, _ body: (UnsafeRawBufferPointer) throws(E) -> R
  ) throws(E) -> R {
    let start = dataOffset + tensor.offset
    let all = UnsafeRawBufferPointer(start: base, count: mappedLength)
    return try body(UnsafeRawBufferPointer(rebasing: all[start ..< start + tensor.byteCount]))
  }

  // MARK: - Parsing

  private struct Header {
    var version: UInt32
    var metadata: [String: GGUFValue]
    var metadataKeys: [String]
    var tensors: [GGUFTensorInfo]
    var alignment: Int
    var dataOffset: Int
    var tensorIndex: [String: Int]
  }

  private static func parse(_ bytes: UnsafeRawBufferPointer, path: String) throws(ModelFileError) -> Header {
    var reader = GGUFByteReader(bytes: bytes, path: path)
    let magicValue = try reader.read(UInt32.self, "the GGUF magic")
    guard magicValue == magic else {
      throw reader.error("not a GGUF file: magic bytes are \(hex(magicValue)), expected \"GGUF\"")
    }
    let version = try reader.read(UInt32.self, "the GGUF version")
    guard supportedVersions.contains(version) else {
      if version.byteSwapped <= 3 {
        throw reader.error("big-endian GGUF files are not supported; use a little-endian export")
      }
      throw reader.error("unsupported GGUF version \(version); this reader handles versions 2 and 3 "
        + "(re-convert with a current llama.cpp)")
    }
    // Minimum bytes per tensor info: u64 name length + u32 n_dims + u32 type + u64 offset.
    let tensorCount = try reader.readCount("tensor count", minItemBytes: 24)
    // Minimum bytes per metadata entry: u64 key length + u32 type + 1-byte value.
    let kvCount = try reader.readCount("metadata count", minItemBytes: 13)

    var metadata: [String: GGUFValue] = [:]
    var keys: [String] = []
    keys.reserveCapacity(kvCount)
    for index in 0 ..< kvCount {
      let key = try reader.readString("metadata key #\(index)")
      let type = try reader.readValueType("metadata \(key)")
      let value = try reader.readValue(type, key)
      guard metadata.updateValue(value, forKey: key) == nil else {
        throw reader.error("duplicate metadata key \(key); the file is corrupt")
      }
      keys.append(key)
    }

    let alignment = try readAlignment(metadata, reader: reader)
    var tensors: [GGUFTensorInfo] = []
    var index: [String: Int] = [:]
    tensors.reserveCapacity(tensorCount)
    for position in 0 ..< tensorCount {
      let info = try readTensorInfo(&reader, position: position, alignment: alignment)
      guard index.updateValue(tensors.count, forKey: info.name) == nil else {
        throw reader.error("duplicate tensor name \(info.name); the file is corrupt")
      }
      tensors.append(info)
    }

    let dataOffset = roundUp(reader.offset, to: alignment)
    for info in tensors {
      let (end, overflow) = info.offset.addingReportingOverflow(info.byteCount)
      guard !overflow, dataOffset <= bytes.count, end <= bytes.count - dataOffset else {
        throw reader.error("data of tensor \(info.name) (\(info.byteCount) bytes at data offset "
          + "\(info.offset)) runs past the end of the file (\(bytes.count) bytes); the file is truncated")
      }
    }
    return Header(version: version, metadata: metadata, metadataKeys: keys, tensors: tensors,
                  alignment: alignment, dataOffset: dataOffset, tensorIndex: index)
  }

  private static func readAlignment(_ metadata: [String: GGUFValue], reader: GGUFByteReader) throws(ModelFileError) -> Int {
    guard let value = metadata["general.alignment"] else { return defaultAlignment }
    guard let alignment = value.int, alignment > 0, alignment.nonzeroBitCount == 1 else {
      throw reader.error("general.alignment is \(value), not a positive power of two")
    }
    return alignment
  }

  private static func readTensorInfo(
    _ reader: inout GGUFByteReader, position: Int, alignment: Int
  ) throws(ModelFileError) -> GGUFTensorInfo {
    let name = try reader.readString("name of tensor #\(position)")
    let rank = try reader.read(UInt32.self, "rank of tensor \(name)")
    guard rank <= maxDimensions else {
      throw reader.error("tensor \(name) claims \(rank) dimensions; GGUF allows at most \(maxDimensions)")
    }
    var dimensions: [Int] = []
    var elements = 1
    for axis in 0 ..< Int(rank) {
      let raw = try reader.read(UInt64.self, "dimension \(axis) of tensor \(name)")
      let (product, overflow) = elements.multipliedReportingOverflow(by: Int(clamping: raw))
      guard let dim = Int(exactly: raw), !overflow else {
        throw reader.error("tensor \(name) has an impossible dimension \(raw)")
      }
      dimensions.append(dim)
      elements = product
    }
    let code = try reader.read(UInt32.self, "type of tensor \(name)")
    guard let type = GGMLType(rawValue: code) else {
      throw reader.error("tensor \(name) has unknown ggml type \(code); the file is corrupt or needs "
        + "a newer reader")
    }
    let rawOffset = try reader.read(UInt64.self, "data offset of tensor \(name)")
    guard let offset = Int(exactly: rawOffset), offset % alignment == 0 else {
      throw reader.error("tensor \(name) has data offset \(rawOffset), not a multiple of the "
        + "alignment \(alignment)")
    }
    guard let byteCount = type.byteCount(elements: elements, rowLength: dimensions.first ?? 1) else {
      throw reader.error("tensor \(name) of type \(type.name) has row length \(dimensions.first ?? 1), "
        + "not a multiple of the block size \(type.blockLayout.elements)")
    }
    return GGUFTensorInfo(name: name, dimensions: dimensions, type: type, offset: offset, byteCount: byteCount)
  }

  static func roundUp(_ value: Int, to alignment: Int) -> Int {
    (value + alignment - 1) / alignment * alignment
  }

  private static func hex(_ value: UInt32) -> String {
    "0x" + String(value, radix: 16, uppercase: true)
  }
}
