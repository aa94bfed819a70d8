import CVulkan
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import VKFCore

// MARK: - VkResult → VKFError

/// Throws unless `result` is VK_SUCCESS; out-of-memory results become `.outOfMemory`.
@inline(__always)
func vkCheck(_ result: VkResult, _ what: @autoclosure () -> String) throws {
  guard result != VK_SUCCESS else { return }
  throw vkError(result, what())
}

/// The `VKFError` for a failed Vulkan call.
func vkError(_ result: VkResult, _ what: String) -> VKFError {
  switch result {
  case VK_ERROR_OUT_OF_DEVICE_MEMORY, VK_ERROR_OUT_OF_HOST_MEMORY:
    return .outOfMemory(detail: "\(what): \(vkResultName(result))")
  default:
    return .device(detail: "\(what) failed: \(vkResultName(result))")
  }
}

/// A readable name for the results a compute backend meets.
func vkResultName(_ r: VkResult) -> String {
  switch r {
  case VK_SUCCESS: return "VK_SUCCESS"
  case VK_NOT_READY: return "VK_NOT_READY"
  case VK_TIMEOUT: return "VK_TIMEOUT"
  case VK_INCOMPLETE: return "VK_INCOMPLETE"
  case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY"
  case VK_ERROR_OUT_OF_DEVICE_MEMORY: return "VK_ERROR_OUT_OF_DEVICE_MEMORY"
  case VK_ERROR_INITIALIZATION_FAILED: return "VK_ERROR_INITIALIZATION_FAILED"
  case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST"
  case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED"
  case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT"
  case VK_ERROR_EXTENSION_NOT_PRESENT: return "VK_ERROR_EXTENSION_NOT_PRESENT"
  case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT"
  case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER"
  case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS"
  case VK_ERROR_FRAGMENTED_POOL: return "VK_ERROR_FRAGMENTED_POOL"
  case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY"
  default: return "VkResult(\(r.rawValue))"
  }
}

// MARK: - Small helpers shared by the Vulkan files

/// Vulkan 1.2 as `VK_MAKE_API_VERSION(0, 1, 2, 0)` (function-like macros do not import).
let vkAPIVersion12: UInt32 = (1 << 22) | (2 << 12)

/// A fixed-size C char tuple (e.g. `deviceName`) as a Swift string.
func cString<T>(_ tuple: T) -> String {
  withUnsafeBytes(of: tuple) { raw in
    let bytes = raw.prefix { $0 != 0 }
    return String(decoding: bytes, as: UTF8.self)
  }
}

/// Rounds `x` up to a multiple of `a` (a > 0).
@inline(__always)
func alignUp(_ x: Int, _ a: Int) -> Int { (x + a - 1) / a * a }

/// Rounds `x` down to a multiple of `a` (a > 0).
@inline(__always)
func alignDown(_ x: Int, _ a: Int) -> Int { x / a * a }

/// Runs `body` with an array of C strings that live for the call.
func withCStrings<R>(_ strings: [String],
                     _ body: (UnsafePointer<UnsafePointer<CChar>?>?) throws -> R) rethrows -> R {
  let dup = strings.map { strdup($0) }
  defer { dup.forEach { free($0) } }
  let ptrs: [UnsafePointer<CChar>?] = dup.map { $0.map { UnsafePointer($0) } }
  return try ptrs.withUnsafeBufferPointer { try body($0.baseAddress) }
}
