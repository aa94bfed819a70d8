/// Errors every backend throws; each message says what went wrong and what to do.
public enum VKFError: Error, CustomStringConvertible, Equatable {
  /// An op was called with shapes that do not fit together.
  case shapeMismatch(op: String, detail: String)
  /// An op was called with a dtype it does not take.
  case dtypeMismatch(op: String, detail: String)
  /// A tensor owned by another backend was passed to an op.
  case wrongBackend(op: String, detail: String)
  /// The backend has no implementation of this op for this dtype.
  case unsupported(op: String, detail: String)
  /// An index (token id, target, offset) is out of range.
  case outOfRange(op: String, detail: String)
  /// The device ran out of memory.
  case outOfMemory(detail: String)
  /// The Vulkan driver or device failed.
  case device(detail: String)
  /// A shader failed to compile.
  case shaderCompile(name: String, log: String)
  /// `VKF_CHECK_RESULTS`: an op's result diverged from the reference backend.
  case resultMismatch(op: String, detail: String)
  /// Anything else, with its message.
  case other(String)

  public var description: String {
    switch self {
    case .shapeMismatch(let op, let d): return "\(op): shape mismatch: \(d)"
    case .dtypeMismatch(let op, let d): return "\(op): dtype mismatch: \(d)"
    case .wrongBackend(let op, let d): return "\(op): tensor from another backend: \(d)"
    case .unsupported(let op, let d): return "\(op): not supported: \(d)"
    case .outOfRange(let op, let d): return "\(op): out of range: \(d)"
    case .outOfMemory(let d):
      return "out of device memory: \(d) (try --cpu, a smaller batch, QLoRA, or a memory budget)"
    case .device(let d): return "Vulkan device error: \(d)"
    case .shaderCompile(let n, let log): return "shader \(n) failed to compile: \(log)"
    case .resultMismatch(let op, let d): return "VKF_CHECK_RESULTS: \(op) diverged from the CPU: \(d)"
    case .other(let s): return s
    }
  }
}
