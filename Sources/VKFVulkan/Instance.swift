#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CVulkan
import Foundation
import VKFCore

/// Warning and error messages from the validation layer, collected from any thread.
final class ValidationLog: @unchecked Sendable {
  private let lock = NSLock()
  private var messages: [String] = []

  func append(_ message: String) {
    lock.lock(); defer { lock.unlock() }
    // A runaway loop of identical errors must not eat the heap.
    if messages.count < 1000 { messages.append(message) }
  }

  var all: [String] {
    lock.lock(); defer { lock.unlock() }
    return messages
  }

  func clear() {
    lock.lock(); defer { lock.unlock() }
    messages.removeAll()
  }
}

/// VK_EXT_debug_utils callback: a plain C function that finds its log through pUserData
/// (a Swift closure with captures cannot be a C function pointer).
private let debugCallback: PFN_vkDebugUtilsMessengerCallbackEXT = { severity, _, data, user in
  guard let user, let data else { return VkBool32(VK_FALSE) }
  let log = Unmanaged<ValidationLog>.fromOpaque(user).takeUnretainedValue()
  let id = data.pointee.pMessageIdName.map { String(cString: $0) } ?? "?"
  let text = data.pointee.pMessage.map { String(cString: $0) } ?? ""
  let level = severity.rawValue & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT.rawValue != 0
    ? "error" : "warning"
  log.append("[\(level)] \(id): \(text)")
  return VkBool32(VK_FALSE)
}

/// The Vulkan instance, with the validation layer and a message collector when
/// `VKF_VALIDATION=1`.
final class VulkanInstance {
  let handle: VkInstance
  let log = ValidationLog()
  private(set) var validationEnabled = false
  private var messenger: VkDebugUtilsMessengerEXT?

  static let validationLayer = "VK_LAYER_KHRONOS_validation"

  /// Creates the instance; `validation` nil reads `VKF_VALIDATION`.
  init(validation: Bool? = nil) throws {
    let wantValidation = validation ?? (ProcessInfo.processInfo.environment["VKF_VALIDATION"] == "1")
    let layers = wantValidation && Self.layerAvailable(Self.validationLayer)
      ? [Self.validationLayer] : []
    let debugUtils = !layers.isEmpty && Self.extensionAvailable("VK_EXT_debug_utils")
    let extensions = debugUtils ? ["VK_EXT_debug_utils"] : []

    var instance: VkInstance?
    let result: VkResult = "vkfinetune".withCString { appName in
      var app = VkApplicationInfo()
      app.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO
      app.pApplicationName = appName
      app.applicationVersion = 1
      app.pEngineName = appName
      app.engineVersion = 1
      app.apiVersion = vkAPIVersion12
      return withUnsafePointer(to: &app) { appPtr in
        withCStrings(layers) { layerPtrs in
          withCStrings(extensions) { extPtrs in
            var info = VkInstanceCreateInfo()
            info.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO
            info.pApplicationInfo = appPtr
            info.enabledLayerCount = UInt32(layers.count)
            info.ppEnabledLayerNames = layerPtrs
            info.enabledExtensionCount = UInt32(extensions.count)
            info.ppEnabledExtensionNames = extPtrs
            return vkCreateInstance(&info, nil, &instance)
          }
        }
      }
    }
    guard result == VK_SUCCESS, let instance else {
      throw VKFError.device(detail: "no Vulkan driver: vkCreateInstance returned "
        + "\(vkResultName(result)); install a Vulkan driver (e.g. mesa-vulkan-drivers) or use --cpu")
    }
    handle = instance
    validationEnabled = !layers.isEmpty
    if debugUtils { try installMessenger() }
  }

  deinit {
    if let messenger, let destroy = instanceFunction("vkDestroyDebugUtilsMessengerEXT",
                                                      as: PFN_vkDestroyDebugUtilsMessengerEXT.self) {
      destroy(handle, messenger, nil)
    }
    vkDestroyInstance(handle, nil)
  }

  private func installMessenger() throws {
    guard let create = instanceFunction("vkCreateDebugUtilsMessengerEXT",
                                        as: PFN_vkCreateDebugUtilsMessengerEXT.self) else { return }
    var info = VkDebugUtilsMessengerCreateInfoEXT()
    info.sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT
    info.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT.rawValue
      | VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT.rawValue
    info.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT.rawValue
      | VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT.rawValue
      | VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT.rawValue
    info.pfnUserCallback = debugCallback
    // The log lives as long as the instance (a stored let), so unretained is safe.
    info.pUserData = Unmanaged.passUnretained(log).toOpaque()
    var m: VkDebugUtilsMessengerEXT?
    try vkCheck(create(handle, &info, nil, &m), "vkCreateDebugUtilsMessengerEXT")
    messenger = m
  }

  /// An instance-level function pointer cast to its PFN type.
  func instanceFunction<F>(_ name: String, as: F.Type) -> F? {
    guard let p = vkGetInstanceProcAddr(handle, name) else { return nil }
    return unsafeBitCast(p, to: F.self)
  }

  // MARK: - Layer and extension queries

  static func layerAvailable(_ name: String) -> Bool {
    var count: UInt32 = 0
    guard vkEnumerateInstanceLayerProperties(&count, nil) == VK_SUCCESS, count > 0 else { return false }
    var props = [VkLayerProperties](repeating: VkLayerProperties(), count: Int(count))
    guard vkEnumerateInstanceLayerProperties(&count, &props) == VK_SUCCESS else { return false }
    return props.prefix(Int(count)).contains { cString($0.layerName) == name }
  }

  static func extensionAvailable(_ name: String) -> Bool {
    var count: UInt32 = 0
    guard vkEnumerateInstanceExtensionProperties(nil, &count, nil) == VK_SUCCESS else { return false }
    var props = [VkExtensionProperties](repeating: VkExtensionProperties(), count: Int(count))
    guard vkEnumerateInstanceExtensionProperties(nil, &count, &props) == VK_SUCCESS else { return false }
    return props.prefix(Int(count)).contains { cString($0.extensionName) == name }
  }
}
