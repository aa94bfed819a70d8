/// Memory owned by one backend. A backend subclasses nothing: it conforms its own storage
/// class to this protocol and checks `owner` before touching the memory.
public protocol TensorStorage: AnyObject {
  /// Identity of the backend that allocated this storage.
  var owner: ObjectIdentifier { get }
  /// Size of the allocation in bytes.
  var byteCount: Int { get }
  /// Where the memory lives.
  var memory: MemoryKind { get }
}

/// A contiguous row-major view into backend-owned storage.
///
/// A tensor is a value: copying it copies the view, not the memory. Views share storage
/// and differ by `byteOffset` and `shape` (`view(offset:shape:)`, `rows(_:)`).
public struct Tensor: @unchecked Sendable, CustomStringConvertible {
  /// The memory this tensor views.
  public let storage: TensorStorage
  /// Dimensions, outermost first. A scalar has shape `[]` and one element.
  public let shape: [Int]
  /// Element type.
  public let dtype: DType
  /// Offset of the first element from the start of `storage`, in bytes.
  public let byteOffset: Int

  /// Makes a view; backends call this after allocating, callers use `view`.
  public init(storage: TensorStorage, shape: [Int], dtype: DType, byteOffset: Int = 0) {
    self.storage = storage
    self.shape = shape
    self.dtype = dtype
    self.byteOffset = byteOffset
  }

  /// Number of elements.
  public var count: Int { shape.reduce(1, *) }
  /// Number of bytes the view covers.
  public var byteCount: Int { count * dtype.size }
  /// Number of dimensions.
  public var rank: Int { shape.count }
  /// Size of the last dimension (1 for a scalar).
  public var lastDim: Int { shape.last ?? 1 }
  /// Product of all dimensions but the last: the number of rows of a row-wise op.
  public var rowCount: Int { count / max(lastDim, 1) }

  /// A view of `shape` starting `offset` elements past this view's start.
  public func view(offset: Int = 0, shape: [Int]) throws -> Tensor {
    let n = shape.reduce(1, *)
    guard offset >= 0, shape.allSatisfy({ $0 >= 0 }),
          byteOffset + (offset + n) * dtype.size <= storage.byteCount else {
      throw VKFError.outOfRange(op: "view",
        detail: "offset \(offset) + \(shape) exceeds storage of \(storage.byteCount) bytes")
    }
    return Tensor(storage: storage, shape: shape, dtype: dtype,
                  byteOffset: byteOffset + offset * dtype.size)
  }

  /// The same elements with another shape of equal element count.
  public func reshaped(_ newShape: [Int]) throws -> Tensor {
    guard newShape.reduce(1, *) == count else {
      throw VKFError.shapeMismatch(op: "reshape", detail: "\(shape) → \(newShape)")
    }
    return Tensor(storage: storage, shape: newShape, dtype: dtype, byteOffset: byteOffset)
  }

  /// Rows `range` of the outermost dimension.
  public func rows(_ range: Range<Int>) throws -> Tensor {
    guard let first = shape.first, range.lowerBound >= 0, range.upperBound <= first else {
      throw VKFError.outOfRange(op: "rows", detail: "\(range) of \(shape)")
    }
    let inner = shape.dropFirst().reduce(1, *)
    return try view(offset: range.lowerBound * inner, shape: [range.count] + shape.dropFirst())
  }

  /// True when both views share storage and their byte ranges intersect.
  public func overlaps(_ other: Tensor) -> Bool {
    storage === other.storage && byteOffset < other.byteOffset + other.byteCount
      && other.byteOffset < byteOffset + byteCount
  }

  public var description: String { "Tensor(\(dtype) \(shape))" }
}
