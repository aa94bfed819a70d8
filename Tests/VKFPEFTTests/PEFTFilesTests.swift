import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport
@testable import VKFPEFT

/// PEFT adapter directories: save → load, the peft-written fixture, refusals and errors.
final class PEFTFilesTests: XCTestCase {
  /// Logits with a peft adapter vs peft's own: the same f32 math in another summation order
  /// through a 2-layer model (k ≤ 48); the golden model tests measure ≤ 2.5e-13 NMSE and
  /// 1.5e-6 max abs for the base model. 100× headroom; a wrong key, transposition or
  /// scaling (α/r vs α/√r) gives NMSE > 1e-4.
  static let peftLogitsNMSE = 1e-11
  static let peftLogitsMaxAbs = 1e-5

  private var dir: PEFTTestDirectory!
  override func setUpWithError() throws { dir = try PEFTTestDirectory() }
  override func tearDown() { dir = nil }

  private let cpu: Backend = TestBackends.cpu
  private let doraConfig = LoRAConfig(r: 4, alpha: 6, dropout: 0, targetModules: LoRAConfig.allLinear,
                                      useRSLoRA: true, useDoRA: true)

  // MARK: - Round trip

  func test_saveLoad_roundTripsEveryTensorBitwise_loraAndDoRA() throws {
    for (i, config) in [LoRAConfig(r: 3, alpha: 5, dropout: 0.05, targetModules: ["q_proj", "up_proj"]),
                        doraConfig].enumerated() {
      let lora = try LoRAModel(weights: try PEFTFixture.base(on: cpu), config: config, seed: 7)
      try PEFTTestSupport.randomize(lora, seed: 100 + UInt64(i))
      let out = dir.path("adapter\(i)")
      try PEFTAdapterFiles.save(lora, baseModel: "org/tiny", to: out, readme: "lr: 1e-4\nepochs: 1")
      XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.path).sorted(),
                     ["README.md", "adapter_config.json", "adapter_model.safetensors"])

      let (readBack, base) = try PEFTAdapterFiles.readConfig(out)
      XCTAssertEqual(readBack, LoRAConfig(r: config.r, alpha: config.alpha, dropout: config.dropout,
                                          targetModules: config.resolvedTargetModules,
                                          useRSLoRA: config.useRSLoRA, useDoRA: config.useDoRA))
      XCTAssertEqual(base, "org/tiny")
      let loaded = try PEFTAdapterFiles.load(out, into: try PEFTFixture.base(on: cpu), seed: 99)
      let want = try PEFTTestSupport.tensors(lora), got = try PEFTTestSupport.tensors(loaded)
      XCTAssertEqual(Set(got.keys), Set(want.keys))
      for (key, values) in want {
        XCTAssertEqual(got[key]?.map(\.bitPattern), values.map(\.bitPattern), "\(key) bitwise")
      }
      let card = try String(contentsOf: out.appendingPathComponent("README.md"), encoding: .utf8)
      XCTAssertTrue(card.contains("base_model: \"org/tiny\"") && card.contains("library_name: peft"), card)
      XCTAssertTrue(card.contains("lr: 1e-4\nepochs: 1"), "the recipe is in the card")
    }
    XCTAssertFalse(try dir.contents().contains { $0.hasPrefix(".") }, "no temporary directory left behind")
  }

  // MARK: - Against peft's own files

  func test_save_keysShapesAndConfigFields_matchPEFTWrittenAdapter() throws {
    let peftDir = PEFTFixture.adapter("dora")
    let lora = try LoRAModel(weights: try PEFTFixture.base(on: cpu), config: doraConfig, seed: 1)
    let out = dir.path("ours")
    try PEFTAdapterFiles.save(lora, baseModel: "base", to: out)

    let theirs = try SafetensorsFile(contentsOf: peftDir.appendingPathComponent("adapter_model.safetensors"))
    let ours = try SafetensorsFile(contentsOf: out.appendingPathComponent("adapter_model.safetensors"))
    XCTAssertEqual(ours.tensorNames, theirs.tensorNames, "PEFT keys")
    for name in theirs.tensorNames {
      XCTAssertEqual(try ours.shape(of: name), try theirs.shape(of: name), name)
      XCTAssertEqual(try ours.storedType(of: name), "F32", name)
    }
    XCTAssertEqual(ours.metadata, theirs.metadata, "safetensors metadata ({format: pt})")

    func json(_ d: URL) throws -> [String: Any] {
      try XCTUnwrap(try JSONSerialization.jsonObject(
        with: Data(contentsOf: d.appendingPathComponent("adapter_config.json"))) as? [String: Any])
    }
    let a = try json(out), b = try json(peftDir)
    XCTAssertEqual(Set(a.keys), Set(b.keys), "the same field set as peft writes")
    for key in ["peft_type", "task_type", "bias", "peft_version", "megatron_core", "base_model_name_or_path"] {
      XCTAssertEqual(a[key] as? String, b[key] as? String, key)
    }
    for key in ["r", "lora_alpha", "qalora_group_size"] { XCTAssertEqual(a[key] as? Int, b[key] as? Int, key) }
    XCTAssertEqual(a["lora_dropout"] as? Double, b["lora_dropout"] as? Double)
    for key in ["use_rslora", "use_dora", "fan_in_fan_out", "inference_mode", "init_lora_weights", "lora_bias",
                "use_qalora", "ensure_weight_tying"] {
      XCTAssertEqual(a[key] as? Bool, b[key] as? Bool, key)
    }
    XCTAssertEqual(Set(try XCTUnwrap(a["target_modules"] as? [String])),
                   Set(try XCTUnwrap(b["target_modules"] as? [String])))
    for (key, value) in b where value is NSNull { XCTAssertTrue(a[key] is NSNull, "\(key) is null as in peft") }
  }

  func test_load_peftWrittenAdapters_logitsMatchPEFT() throws {
    let expected = try PEFTFixture.expected(), ids = try PEFTFixture.ids()
    var report: [String] = []
    for name in ["lora", "dora"] {
      let weights = try PEFTFixture.base(on: cpu)
      let lora = try PEFTAdapterFiles.load(PEFTFixture.adapter(name), into: weights)
      lora.training = false
      let logits = try PEFTFixture.logits(weights, ids: ids)
      report.append(PEFTTestSupport.compare("\(name) adapter logits vs peft", try expected.floats("logits.\(name)"),
                                            logits, nmse: Self.peftLogitsNMSE, maxAbs: Self.peftLogitsMaxAbs))
      // The adapter must matter: otherwise the comparison above proves nothing.
      XCTAssertGreaterThan(Compare.nmse(try expected.floats("logits.base"), logits), 1e-4, "\(name) changes logits")
    }
    print("peft fixture: " + report.joined(separator: "; "))
  }

  func test_readConfig_peftWrittenConfig() throws {
    let (config, base) = try PEFTAdapterFiles.readConfig(PEFTFixture.adapter("dora"))
    XCTAssertEqual(config.r, 4)
    XCTAssertEqual(config.alpha, 6)
    XCTAssertTrue(config.useDoRA && config.useRSLoRA)
    XCTAssertEqual(config.resolvedTargetModules, LoRAConfig.allLinear)
    XCTAssertEqual(base, "base")
  }

  // MARK: - Refusals and errors

  func test_save_refusesExistingNonEmptyDirectory_overwriteReplacesIt() throws {
    let lora = try LoRAModel(weights: try PEFTFixture.base(on: cpu), config: LoRAConfig(r: 2), seed: 3)
    let out = dir.path("adapter")
    try FileManager.default.createDirectory(at: out, withIntermediateDirectories: false)
    try PEFTAdapterFiles.save(lora, baseModel: "b", to: out)  // an empty directory is fine
    try Data("old".utf8).write(to: out.appendingPathComponent("stale.txt"))
    XCTAssertThrowsError(try PEFTAdapterFiles.save(lora, baseModel: "b", to: out)) { error in
      let message = "\(error)"
      XCTAssertTrue(message.contains("already exists") && message.contains("overwrite"), message)
      XCTAssertFalse(message.contains("\n"))
    }
    XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("stale.txt").path),
                  "a refused save leaves the directory alone")
    try PEFTAdapterFiles.save(lora, baseModel: "b", to: out, overwrite: true)
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.path).sorted(),
                   ["README.md", "adapter_config.json", "adapter_model.safetensors"], "replaced whole")
    XCTAssertEqual(try dir.contents(), ["adapter"], "no temporary or set-aside directory left")
  }

  func test_atomicDirectory_failedBodyOrBadTarget_leavesNothingAndKeepsOldContents() throws {
    let out = dir.path("kept")
    try FileManager.default.createDirectory(at: out, withIntermediateDirectories: false)
    try Data("old".utf8).write(to: out.appendingPathComponent("old.txt"))
    struct Boom: Error {}
    XCTAssertThrowsError(try AtomicDirectory.write(to: out, overwrite: true, what: "test") { tmp in
      try Data("new".utf8).write(to: tmp.appendingPathComponent("new.txt"))
      throw Boom()
    }) { XCTAssertTrue($0 is Boom) }
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: out.path), ["old.txt"], "old contents kept")
    XCTAssertEqual(try dir.contents(), ["kept"], "the temporary directory is removed")

    let file = dir.path("file")
    try Data("x".utf8).write(to: file)
    let lora = try LoRAModel(weights: try PEFTFixture.base(on: cpu), config: LoRAConfig(r: 2), seed: 3)
    XCTAssertThrowsError(try PEFTAdapterFiles.save(lora, baseModel: "b", to: file, overwrite: true)) {
      XCTAssertTrue("\($0)".contains("is not a directory"), "\($0)")
    }
    XCTAssertThrowsError(try PEFTAdapterFiles.save(lora, baseModel: "b", to: dir.path("no/such/parent"))) {
      XCTAssertTrue("\($0)".contains("parent directory"), "\($0)")
    }
  }

  func test_readConfig_malformed_givesOneLineErrorNamingTheField() throws {
    let cases: [(String, String)] = [
      ("not json", "not a JSON object"),
      (#"{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]}"#, "peft_type is missing"),
      (#"{"peft_type": "IA3", "r": 8}"#, "peft_type is \"IA3\""),
      (#"{"peft_type": "LORA", "lora_alpha": 16, "target_modules": ["q_proj"]}"#, "r is missing"),
      (#"{"peft_type": "LORA", "r": "8", "lora_alpha": 16, "target_modules": ["q_proj"]}"#, "r must be a number"),
      (#"{"peft_type": "LORA", "r": 8.5, "lora_alpha": 16, "target_modules": ["q_proj"]}"#, "positive integer"),
      (#"{"peft_type": "LORA", "r": 8, "target_modules": ["q_proj"]}"#, "lora_alpha is missing"),
      (#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16}"#, "target_modules is missing"),
      (#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["c_attn"]}"#, "\"c_attn\""),
      (#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "bias": "all"}"#, "bias"),
      (#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "use_dora": 1}"#,
       "use_dora must be true or false"),
      (#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "modules_to_save": ["lm_head"]}"#,
       "modules_to_save"),
      (#"{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj"], "lora_dropout": 1.5}"#,
       "dropout"),
    ]
    for (i, (text, expected)) in cases.enumerated() {
      let d = dir.path("bad\(i)")
      try FileManager.default.createDirectory(at: d, withIntermediateDirectories: false)
      try Data(text.utf8).write(to: d.appendingPathComponent("adapter_config.json"))
      XCTAssertThrowsError(try PEFTAdapterFiles.readConfig(d), text) { error in
        let message = "\(error)"
        XCTAssertTrue(message.contains(expected), "\(text) → \(message)")
        XCTAssertTrue(message.contains("adapter_config.json"), "names the file: \(message)")
        XCTAssertFalse(message.contains("\n"), "one line: \(message)")
      }
    }
    XCTAssertThrowsError(try PEFTAdapterFiles.readConfig(dir.path("absent"))) { error in
      XCTAssertTrue("\(error)".contains("cannot read the adapter config"), "\(error)")
    }
  }

  /// Writes a copy of the peft lora fixture whose tensors were changed by `edit`.
  private func editedAdapter(_ name: String,
                             _ edit: (inout [SafetensorsWriter.Tensor]) throws -> Void) throws -> URL {
    let source = PEFTFixture.adapter("lora")
    let st = try SafetensorsFile(contentsOf: source.appendingPathComponent("adapter_model.safetensors"))
    var tensors = try st.tensorNames.map {
      try SafetensorsWriter.Tensor(name: $0, shape: try st.shape(of: $0), floats: try st.floats($0))
    }
    try edit(&tensors)
    let out = dir.path(name)
    try FileManager.default.createDirectory(at: out, withIntermediateDirectories: false)
    try FileManager.default.copyItem(at: source.appendingPathComponent("adapter_config.json"),
                                     to: out.appendingPathComponent("adapter_config.json"))
    try SafetensorsWriter.write(tensors: tensors, to: out.appendingPathComponent("adapter_model.safetensors"))
    return out
  }

  func test_load_missingWrongShapeOrExtraTensor_namesTheKeyAndLeavesNoAdapter() throws {
    let key = "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"
    let missing = try editedAdapter("missing") { $0.removeAll { $0.name == key } }
    let transposed = try editedAdapter("transposed") { ts in
      // Same element count, transposed shape: only a shape check catches it.
      if let i = ts.firstIndex(where: { $0.name == key }) { ts[i].shape = ts[i].shape.reversed() }
    }
    let extra = try editedAdapter("extra") { ts in
      ts.append(try SafetensorsWriter.Tensor(name: "base_model.model.lm_head.lora_A.weight", shape: [4, 32],
                                             floats: [Float](repeating: 0, count: 128)))
    }
    let noWeights = dir.path("noweights")
    try FileManager.default.createDirectory(at: noWeights, withIntermediateDirectories: false)
    try FileManager.default.copyItem(at: PEFTFixture.adapter("lora").appendingPathComponent("adapter_config.json"),
                                     to: noWeights.appendingPathComponent("adapter_config.json"))
    let cases: [(URL, [String])] = [
      (missing, [key, "missing"]), (transposed, [key, "shape [32, 4]", "[4, 32]"]),
      (extra, ["base_model.model.lm_head.lora_A.weight", "unexpected"]),
      (noWeights, ["adapter_model.safetensors is missing"]),
    ]
    for (url, needles) in cases {
      let weights = try PEFTFixture.base(on: cpu)
      XCTAssertThrowsError(try PEFTAdapterFiles.load(url, into: weights)) { error in
        let message = "\(error)"
        for n in needles { XCTAssertTrue(message.contains(n), "\(url.lastPathComponent): \(message)") }
        XCTAssertFalse(message.contains("\n"), message)
      }
      var attached = 0
      weights.updateProjections { _, linear in if linear.adapter != nil { attached += 1 } }
      XCTAssertEqual(attached, 0, "\(url.lastPathComponent): a failed load attaches nothing")
    }
  }
}
