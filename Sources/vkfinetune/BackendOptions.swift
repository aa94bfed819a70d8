import ArgumentParser
import Foundation
import VKFCore
import VKFCPU
import VKFVulkan

/// `--cpu` and the backend it selects; shared by every command that computes.
struct BackendOptions: ParsableArguments {
  @Flag(help: "Use the CPU backend (OpenBLAS) instead of the best Vulkan device (also the default when the only Vulkan device is a CPU driver).")
  var cpu = false

  /// The CPU backend, or the Vulkan device `VKF_DEVICE` / the ranking picks; wrapped in a
  /// `CheckingBackend` when VKF_CHECK_RESULTS=1.
  /// When the best Vulkan device is a CPU driver (lavapipe / llvmpipe: no GPU present) and
  /// `VKF_DEVICE` does not ask for it, the OpenBLAS backend is used instead, with a note:
  /// it computes the same ops roughly 40–70× faster on the same cores.
  func makeBackend() throws -> Backend {
    if cpu { return CPUBackend() }
    let env = ProcessInfo.processInfo.environment
    if (env["VKF_DEVICE"] ?? "").isEmpty,
       let picked = (try? VulkanBackend.listDevices())?.first(where: \.isSelected), picked.type == "cpu" {
      FileHandle.standardError.write(Data(("note: the only Vulkan device is a CPU driver (\(picked.name)); using the "
        + "OpenBLAS CPU backend, which is much faster (set VKF_DEVICE=\(picked.index) to use the driver anyway)\n").utf8))
      return CPUBackend()
    }
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
