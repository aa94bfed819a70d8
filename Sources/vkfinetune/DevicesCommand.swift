import ArgumentParser
import VKFCore
import VKFVulkan

/// `vkfinetune devices`: the Vulkan devices found and which one training would use.
struct DevicesCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "devices", abstract: "List Vulkan devices and the one that would be picked.")

  @Flag(help: "Also run the picked device's matmul variants (cooperative matrix included) against the CPU.")
  var verify = false

  func run() throws {
    let devices: [VulkanDeviceInfo]
    do { devices = try VulkanBackend.listDevices() } catch {
      print("No Vulkan device available: \(error)")
      print("Training still works on the CPU: pass --cpu.")
      throw ExitCode(1)
    }
    if devices.isEmpty {
      print("No Vulkan device found. Training still works on the CPU: pass --cpu.")
      throw ExitCode(1)
    }
    for (i, d) in devices.enumerated() {
      let mark = d.isSelected ? "*" : " "
      print("\(mark) [\(i)] \(d.name) (\(d.typeName))")
      let budget = d.deviceLocalBudgetBytes.map { " (budget \(formatBytes($0)))" } ?? ""
      print("      memory \(formatBytes(d.deviceLocalBytes))\(budget), fp16 \(d.float16 ? "yes" : "no"), "
        + "subgroup \(d.subgroupSize), cooperative matrix \(d.cooperativeMatrix ? "yes" : "no"), "
        + "max binding \(formatBytes(d.maxStorageBufferRange)), driver \(d.driver)")
      // Every device runs the same variants: 16-bit operands are widened by bit conversion
      // as tiles are staged, so they need no float16 feature.
      print("      matmul: shared-memory tiles \(MatmulVariant.tileDescription), f32 accumulation; "
        + "operands f32, f16 or bf16 (--bf16/--fp16 weights); NF4 weights decoded in the kernel")
      print("      f16·f16 matmul: \(d.cooperativeMatrixKernel)")
    }
    print("* = picked (override with VKF_DEVICE=<index or name substring>)")
    if verify {
      let device = try VulkanBackend()
      print("verify on \(device.name): each product on the device and on the CPU, same inputs")
      guard try DeviceVerify.run(device) else {
        print("error: the device's results differ from the CPU's (above)")
        throw ExitCode(1)
      }
    }
  }
}

/// 1536 MiB style sizes.
func formatBytes(_ n: Int) -> String {
  if n >= 1 << 30 { return String(format: "%.1f GiB", Double(n) / Double(1 << 30)) }
  return "\(n >> 20) MiB"
}

import Foundation
