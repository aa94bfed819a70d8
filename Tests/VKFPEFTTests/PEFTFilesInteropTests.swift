import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport
@testable import VKFPEFT

/// Developer hook for tools/check_peft_adapter.py: writes adapters, our logits and merged
/// model directories for peft and transformers to load. Skipped unless VKF_PEFT_OUT is set.
///
///     VKF_PEFT_OUT=/tmp/out [VKF_PEFT_BASE=/path/to/hf-f32-model] swift test --filter PEFTFilesInteropTests
///     $VKF_REF_VENV/bin/python tools/check_peft_adapter.py check --base <base> \
///       --adapter /tmp/out/lora/adapter --expect /tmp/out/lora/logits.safetensors --merged /tmp/out/lora/merged
final class PEFTFilesInteropTests: XCTestCase {
  func test_writeAdaptersLogitsAndMergedModels_forPythonCheck() throws {
    let env = ProcessInfo.processInfo.environment
    guard let outPath = env["VKF_PEFT_OUT"] else {
      throw XCTSkip("set VKF_PEFT_OUT=dir (and optionally VKF_PEFT_BASE=hf-dir) to write adapters for "
        + "tools/check_peft_adapter.py")
    }
    let base = env["VKF_PEFT_BASE"].map { URL(fileURLWithPath: $0) } ?? PEFTFixture.baseDirectory
    let out = URL(fileURLWithPath: outPath)
    try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
    let config = try DecoderConfig.load(from: base)
    let shape = try TransformerShape(config: config)
    let ids: [Int32] = [1, 17, 5, 42, 9, 33, 60, 2, 28]
    let variants: [(String, LoRAConfig)] = [
      ("lora", LoRAConfig(r: 8, alpha: 16, dropout: 0.05, targetModules: [LoRAConfig.allLinearKeyword])),
      ("dora", LoRAConfig(r: 4, alpha: 8, dropout: 0, targetModules: LoRAConfig.allLinear, useRSLoRA: true,
                          useDoRA: true)),
    ]
    for (i, (name, loraConfig)) in variants.enumerated() {
      let weights = try DecoderWeights(from: try SafetensorsCheckpoint.open(directory: base), shape: shape,
                                     backend: TestBackends.cpu)
      let lora = try LoRAModel(weights: weights, config: loraConfig, seed: 42)
      try PEFTTestSupport.randomize(lora, seed: 1000 + UInt64(i), amplitude: 0.05)
      lora.training = false
      let logits = try PEFTFixture.logits(weights, ids: ids)
      let dir = out.appendingPathComponent(name)
      try? FileManager.default.removeItem(at: dir)
      try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
      try SafetensorsWriter.write(tensors: [
        SafetensorsWriter.Tensor(name: "ids", shape: [ids.count], dtype: .i32,
                                 data: ids.withUnsafeBytes { Array($0) }),
        try SafetensorsWriter.Tensor(name: "logits", shape: [ids.count, shape.vocab], floats: logits),
      ], to: dir.appendingPathComponent("logits.safetensors"))
      try PEFTAdapterFiles.save(lora, baseModel: base.path, to: dir.appendingPathComponent("adapter"),
                                readme: "dev hook: \(name), seeded random adapter")
      try Merge.merge(lora)
      try HFModelWriter.write(weights: weights, config: config, tokenizerSource: base,
                              to: dir.appendingPathComponent("merged"))
      print("wrote \(dir.path)")
    }
  }

  /// VKF_PEFT_GGUF=model.gguf: the GGUF alone (config synthesised from its metadata) written as
  /// an HF directory, with our logits, for `check_peft_adapter.py model`.
  func test_writeGGUFAsHFDirectory_forPythonCheck() throws {
    let env = ProcessInfo.processInfo.environment
    guard let outPath = env["VKF_PEFT_OUT"], let gguf = env["VKF_PEFT_GGUF"] else {
      throw XCTSkip("set VKF_PEFT_OUT=dir and VKF_PEFT_GGUF=model.gguf to write a GGUF as an HF directory for "
        + "tools/check_peft_adapter.py model")
    }
    let loaded = try ModelLoader.load(.gguf(URL(fileURLWithPath: gguf)), useSiblingFiles: false)
    XCTAssertNil(loaded.config, "the config is synthesised, not read")
    let weights = try DecoderWeights(from: loaded.weights, shape: loaded.shape, backend: TestBackends.cpu)
    let ids: [Int32] = [1, 17, 5, 42, 9, 33, 60, 2, 28]
    let logits = try PEFTFixture.logits(weights, ids: ids)
    let dir = URL(fileURLWithPath: outPath).appendingPathComponent("gguf-model")
    try? FileManager.default.removeItem(at: dir)
    let written = try HFModelWriter.write(weights: weights, model: loaded, to: dir)
    try SafetensorsWriter.write(tensors: [
      SafetensorsWriter.Tensor(name: "ids", shape: [ids.count], dtype: .i32, data: ids.withUnsafeBytes { Array($0) }),
      try SafetensorsWriter.Tensor(name: "logits", shape: [ids.count, loaded.shape.vocab], floats: logits),
    ], to: URL(fileURLWithPath: outPath).appendingPathComponent("gguf-model.logits.safetensors"))
    print("wrote \(dir.path): \(written.weightFiles + written.copiedFiles)")
  }
}
