import ArgumentParser

/// The `vkfinetune` command: fine-tune LLMs on any Vulkan GPU, or on the CPU with `--cpu`.
struct VKFineTune: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "vkfinetune",
    abstract: "Fine-tune LLMs on any Vulkan GPU (or the CPU with --cpu).",
    discussion: """
      Environment: VKF_DEVICE=<index or name substring> picks a Vulkan device; \
      VKF_CHECK_RESULTS=1 replays every Vulkan op on the CPU and stops at the first \
      divergence; VKF_VALIDATION=1 enables the Vulkan validation layer.
      """,
    subcommands: [DevicesCommand.self, BenchCommand.self, GenerateCommand.self, TrainCommand.self,
                   EvalCommand.self, ScoreCommand.self, MergeCommand.self, ExportCommand.self, QuantizeCommand.self])
}
