import ArgumentParser
import Foundation
import VKFCore
import VKFCPU
import VKFVulkan

/// `--cpu` and the backend it selects; shared by every command that computes.
struct BackendOptions: ParsableArguments {
  @Flag(help: "Use the CPU backend (OpenBLAS) instead of the best Vulkan device.")
  var cpu = false

  /// The CPU backend, or the Vulkan device `VKF_DEVICE` / the ranking picks; wrapped in a
  /// `CheckingBackend` when VKF_CHECK_RESULTS=1.
  func makeBackend() throws -> Backend {
    if cpu { return CPUBackend() }
    let vulkan: VulkanBackend
    do { vulkan = try VulkanBackend() } catch {
      throw ValidationError("\(error) — no usable Vulkan device; run with --cpu to use the CPU backend")
    }
    if ProcessInfo.processInfo.environment["VKF_CHECK_RESULTS"] == "1" {
      return CheckingBackend(primary: vulkan, reference: CPUBackend())
    }
    return vulkan
  }
}
