// swift-tools-version:6.0
// vkfinetune: LLM fine-tuning on any Vulkan GPU, with an OpenBLAS CPU fallback.
//
// Module map (arrows point down only; see README.md):
//   vkfinetune (CLI) → VKFTrain → {VKFPEFT, VKFData};  VKFPEFT → VKFModel
//   VKFModel, VKFData → VKFTokenizer, VKFCore
//   VKFCPU, VKFVulkan → VKFCore
//   VKFCPU → COpenBLAS;  VKFVulkan → CVulkan, CGlslang
import PackageDescription

let package = Package(
  name: "vkfinetune",
  products: [
    .executable(name: "vkfinetune", targets: ["vkfinetune"]),
    .library(name: "VKFCore", targets: ["VKFCore"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
  ],
  targets: [
    // MARK: - System libraries (only the backend above each imports it)
    .systemLibrary(name: "CVulkan", path: "Sources/CVulkan"),
    .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                   providers: [.apt(["libopenblas-dev"])]),
    .systemLibrary(name: "CGlslang", path: "Sources/CGlslang",
                   providers: [.apt(["glslang-dev", "spirv-tools"])]),

    // MARK: - Library modules
    .target(name: "VKFCore"),
    .target(name: "VKFCPU", dependencies: ["VKFCore", "COpenBLAS"]),
    .target(name: "VKFVulkan", dependencies: ["VKFCore", "CVulkan", "CGlslang"]),
    .target(name: "VKFTokenizer", dependencies: ["VKFCore"]),
    .target(name: "VKFModel", dependencies: ["VKFCore", "VKFTokenizer"]),
    .target(name: "VKFData", dependencies: ["VKFCore", "VKFTokenizer"]),
    .target(name: "VKFPEFT", dependencies: ["VKFCore", "VKFModel", "VKFTokenizer"]),
    .target(name: "VKFTrain", dependencies: ["VKFCore", "VKFModel", "VKFData", "VKFPEFT"]),

    // MARK: - CLI
    .executableTarget(name: "vkfinetune", dependencies: [
      "VKFCore", "VKFCPU", "VKFVulkan", "VKFModel", "VKFTokenizer", "VKFData", "VKFPEFT", "VKFTrain",
      .product(name: "ArgumentParser", package: "swift-argument-parser"),
      .product(name: "Yams", package: "Yams"),
    ]),

    // MARK: - Tests
    .target(name: "VKFTestSupport", dependencies: ["VKFCore", "VKFCPU", "VKFVulkan"],
            path: "Tests/VKFTestSupport"),
    .testTarget(name: "VKFCoreTests", dependencies: ["VKFCore"]),
    .testTarget(name: "VKFTokenizerTests", dependencies: ["VKFTokenizer"], resources: [.copy("Fixtures")]),
    .testTarget(name: "VKFModelTests", dependencies: ["VKFModel", "VKFCore", "VKFCPU", "VKFVulkan", "VKFTestSupport"],
                resources: [.copy("Fixtures")]),
    .testTarget(name: "VKFCPUTests", dependencies: ["VKFCore", "VKFCPU", "VKFTestSupport"]),
    .testTarget(name: "VKFVulkanTests", dependencies: ["VKFCore", "VKFCPU", "VKFVulkan", "VKFTestSupport"]),
    .testTarget(name: "BackendParityTests", dependencies: ["VKFCore", "VKFCPU", "VKFVulkan", "VKFTestSupport"]),
    .testTarget(name: "VKFDataTests", dependencies: ["VKFData", "VKFCore", "VKFTokenizer"], resources: [.copy("Fixtures")]),
    .testTarget(name: "VKFPEFTTests", dependencies: ["VKFPEFT", "VKFModel", "VKFCore", "VKFCPU", "VKFVulkan",
                                                    "VKFTestSupport"], resources: [.copy("Fixtures")]),
    .testTarget(name: "VKFTrainTests", dependencies: ["VKFTrain", "VKFPEFT", "VKFModel", "VKFData", "VKFCore",
                                                     "VKFCPU", "VKFVulkan", "VKFTestSupport"],
                resources: [.copy("Fixtures")]),
    // Seeded fuzzing of every file loader (tools/fuzz runs it for longer).
    .testTarget(name: "FuzzTests", dependencies: ["VKFModel", "VKFData", "VKFTokenizer", "VKFCore"],
                exclude: ["Regressions"]),
    // Runs the built `vkfinetune` binary as a user would (the dependency makes SwiftPM build it).
    .testTarget(name: "CLITests", dependencies: ["vkfinetune"]),
  ]
)
